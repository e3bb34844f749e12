"""The sample CRM's customers table (policies/crm.sql), not managed by
Django: the suite creates it with crm.sql."""

from django.db import models


class Customer(models.Model):
    id = models.BigAutoField(primary_key=True)
    full_name = models.TextField(null=True)
    email = models.TextField(null=True)
    phone = models.TextField(null=True)
    national_id = models.TextField(null=True)
    address = models.TextField(null=True)
    segment = models.TextField(null=True)

    class Meta:
        managed = False
        db_table = "customers"
        app_label = "crmapp"
