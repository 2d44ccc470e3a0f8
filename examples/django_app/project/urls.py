"""URLs: the endpoint that sends jobs and the JSON admin views."""

from __future__ import annotations

from django.urls import path
from emails import views

urlpatterns = [
    path("emails", views.send_email),
    path("admin/stats", views.stats),
    path("admin/jobs", views.job_list),
    path("admin/jobs/<int:job_id>", views.job_detail),
    path("admin/jobs/<int:job_id>/rerun", views.rerun),
    path("admin/jobs/<int:job_id>/cancel", views.cancel),
]
