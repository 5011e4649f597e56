"""The logic behind the app's routes, one module a route, apart from Flask.

:mod:`backend.app` wires them: its ``Backend`` holds one of each and
``create_app()`` maps the URLs to them. What they share: request bodies
(:mod:`~backend.routes.bodies`) and the background bulk jobs a webhook or a
large ``/predict`` starts (:mod:`~backend.routes.background`).
"""
