from __future__ import annotations

from django.urls import path

from director import views, views_coverage, views_hero, views_preflight, views_session
from director.export import views as export_views
from director.music import views as music_views
from director.preflight import status as preflight_status
from director.stills import views as stills_views

app_name = "director"

urlpatterns = [
    path("", views.session_list, name="session_list"),
    path("sessions/new", views.session_create, name="session_create"),
    path("sessions/<uuid:session_id>/start", views.session_start, name="session_start"),
    path("sessions/<uuid:session_id>/stop", views.session_stop, name="session_stop"),
    path("sessions/<uuid:session_id>/", views_session.session_live, name="session_live"),
    path(
        "sessions/<uuid:session_id>/ghost/mode",
        views_session.session_ghost_mode,
        name="session_ghost_mode",
    ),
    path(
        "sessions/<uuid:session_id>/ghost/banner",
        views_session.session_banner,
        name="session_banner",
    ),
    path(
        "sessions/<uuid:session_id>/ghost/<uuid:proposal_id>/accept",
        views_session.proposal_accept,
        name="proposal_accept",
    ),
    path(
        "sessions/<uuid:session_id>/ghost/<uuid:proposal_id>/veto",
        views_session.proposal_veto,
        name="proposal_veto",
    ),
    path(
        "sessions/<uuid:session_id>/ghost/<uuid:proposal_id>/done",
        views_session.proposal_done,
        name="proposal_done",
    ),
    path("sessions/<uuid:session_id>/whep", views_hero.session_whep, name="session_whep"),
    path(
        "sessions/<uuid:session_id>/whep/<str:viewer_id>",
        views_hero.session_whep_end,
        name="session_whep_end",
    ),
    path(
        "sessions/<uuid:session_id>/export",
        export_views.session_export,
        name="session_export",
    ),
    path(
        "exports/<uuid:export_id>/download",
        export_views.export_download,
        name="export_download",
    ),
    path("sessions/<uuid:session_id>/music/", music_views.music_panel, name="music_panel"),
    path("sessions/<uuid:session_id>/music/upload", music_views.music_upload, name="music_upload"),
    path("sessions/<uuid:session_id>/music/cue", music_views.music_cue, name="music_cue"),
    path(
        "sessions/<uuid:session_id>/music/<uuid:track_id>/file",
        music_views.music_file,
        name="music_file",
    ),
    path(
        "sessions/<uuid:session_id>/music/<uuid:track_id>/retry",
        music_views.music_analysis_retry,
        name="music_analysis_retry",
    ),
    path("registry/", views.registry, name="registry"),
    path("registry/pairing/rotate", views.pairing_rotate, name="pairing_rotate"),
    path("registry/coverage", views_coverage.coverage_map, name="coverage_map"),
    path(
        "registry/devices/<uuid:device_id>/place",
        views_coverage.device_place,
        name="device_place",
    ),
    path("registry/capture-all", views.capture_all, name="capture_all"),
    path("registry/devices/<uuid:device_id>/hero", views.device_hero, name="device_hero"),
    path("registry/devices/<uuid:device_id>/lens", views.device_lens, name="device_lens"),
    path("registry/devices/<uuid:device_id>/flip", views.device_flip, name="device_flip"),
    path("registry/devices/<uuid:device_id>/capture", views.device_capture, name="device_capture"),
    path("preflight/", views_preflight.preflight_page, name="preflight"),
    path("preflight/run", views_preflight.preflight_start, name="preflight_start"),
    path("preflight/panel", views_preflight.preflight_panel, name="preflight_panel"),
    path("preflight/status.json", preflight_status.preflight_status, name="preflight_status"),
    path("stills/<uuid:still_id>/", stills_views.still_detail, name="still_detail"),
    path("stills/<uuid:still_id>/original", stills_views.still_original, name="still_original"),
    path("stills/<uuid:still_id>/thumb.jpg", stills_views.still_thumbnail, name="still_thumbnail"),
    path("stills/<uuid:still_id>/preview.jpg", stills_views.still_preview, name="still_preview"),
]
