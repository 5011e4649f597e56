"""Checks behind ``rexlabel doctor``: what is wrong with this set-up, and the fix.

Each check returns :class:`backend.doctor.report.Check` rows (ok / warn / fail
/ skip) with a detail and, when something is wrong, how to fix it. Checks never
raise: an unexpected error becomes a ``fail`` row naming the check
(``run.run_checks``, which runs them in the order a set-up is built).

- ``run``: settings (every variable parses, ``common.settings``) and the order;
- ``workers``: Redis reachable, persistence on, RQ workers listening on
  rexlabel's queues;
- ``labelstudio``: reachable, the token accepted (a personal access token is
  exchanged for an access token first), one task image downloaded, through
  the shared client (``common.labelstudio.api``);
- ``model``: a local directory with config, processor and weights, the Hugging
  Face cache, or the OpenAI-compatible server and its model list; the SAM
  checkpoint and its model type;
- ``gpu``: ``nvidia-smi``, else torch in a subprocess (this process never
  imports torch), against ``REXLABEL_DEVICE``;
- ``report``: the rows and the printed report.
"""
