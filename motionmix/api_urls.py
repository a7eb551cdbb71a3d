"""Device API v1 under /api/v1/: the devices app's NinjaAPI with the director's router.

The mounting happens here, above both apps, because the layers run director -> devices: the
devices app may not import the director's stills endpoint, but the project may join them.
"""

from __future__ import annotations

from devices.api import api
from devices.urls import device_api_urlpatterns
from director.api import router as director_router
from director.api_ghost import ServiceAuthFailed, service_auth_failed
from director.api_ghost import router as ghost_router
from director.api_whip import router as whip_router

api.add_router("", director_router)
api.add_router("/ghost", ghost_router)
api.add_router("", whip_router)
api.add_exception_handler(ServiceAuthFailed, service_auth_failed)

urlpatterns = device_api_urlpatterns()
