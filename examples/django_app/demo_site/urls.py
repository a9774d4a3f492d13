from django.urls import path

from demo_site import views

urlpatterns = [
    path("", views.index, name="index"),
    path("login", views.login, name="login"),
    path("logout", views.logout, name="logout"),
    path("logout-everywhere", views.logout_everywhere, name="logout-everywhere"),
]
