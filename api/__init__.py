"""HTTP only: the routes, request/response models, upload handling, error mapping and logs of the service.

``runners`` holds the model and its serving core and knows nothing of HTTP; this
package turns HTTP requests into engine calls and engine results and errors
into HTTP answers. :func:`api.app.build_app` builds the FastAPI app that
``service.py`` mounts next to BentoML's own audio APIs.
"""
