from django.urls import include, path

from django_project import views

urlpatterns = [
    path("plain", views.plain),
    path("read", views.read),
    path("set", views.set_value),
    path("incr", views.incr),
    path("append", views.append),
    path("slow-set", views.slow_set),
    path("slow-login", views.slow_login),
    path("cycle", views.cycle),
    path("deleted-meanwhile", views.deleted_meanwhile),
    path("flush", views.flush),
    path("clear", views.clear),
    path("expire", views.expire),
    path("login", views.login),
    path("capped-login", views.capped_login),
    path("logout", views.logout),
    path("whoami", views.whoami),
    path("bad-value", views.bad_value),
    path("async-incr", views.async_incr),
    path("status", views.status),
    path("async-status", views.async_status),
    path("time-left", views.time_left),
    path("account/devices/", include("stickless.web.devices.django")),
]
