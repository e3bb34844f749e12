"""The CRM workload with the Django ORM (psycopg 3; client-side binding, or
server-side binding with DJANGO_SERVER_SIDE_BINDING=1): ``create``,
``bulk_create`` (also with ``update_conflicts`` as the upsert), ``save``,
``filter`` with ``__in``, ``update``, ``delete``, slicing for pages, nested
``atomic`` blocks (savepoints) and ``.using()`` for each CRM login.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crmapp.settings")

import django  # noqa: E402

django.setup()

from django.db import DatabaseError, connections, transaction  # noqa: E402
from django.db.models import Value  # noqa: E402
from django.db.models.functions import Lower  # noqa: E402

import workload  # noqa: E402
from crmapp.models import Customer  # noqa: E402

FIELDS = workload.crm.FIELDS


class Django(workload.Adapter):
    def insert_one(self, c):
        customer = Customer.objects.create(**c)
        return customer.id, Customer.objects.get(pk=customer.id).email

    def insert_batch(self, cs):
        return [customer.id for customer in Customer.objects.bulk_create([Customer(**c) for c in cs])]

    def insert_save(self, c):
        customer = Customer(**c)
        customer.save()
        return customer.id

    def find(self, **condition):
        return list(Customer.objects.filter(**condition).order_by("id").values_list("id", "full_name"))

    def find_by_email(self, email):
        return self.find(email=email)

    def find_by_phone(self, phone):
        return self.find(phone=phone)

    def find_in(self, emails):
        return [i for i, _ in self.find(email__in=emails)]

    def find_any(self, emails):
        return [c.id for c in Customer.objects.raw("SELECT id FROM customers WHERE email = ANY(%s)", [emails])]

    def update_phone(self, id, phone):
        customer = Customer.objects.get(pk=id)
        customer.phone = phone
        customer.save(update_fields=["phone"])
        return 1

    def update_address_as_support(self, id, address):
        return Customer.objects.using("support_user").filter(pk=id).update(address=address)

    def next_id(self):
        with connections["default"].cursor() as cur:
            cur.execute("SELECT nextval('customers_id_seq')")
            return cur.fetchone()[0]

    def upsert(self, id, c):
        Customer.objects.bulk_create(
            [Customer(id=id, **c)], update_conflicts=True, unique_fields=["id"], update_fields=FIELDS
        )

    def delete_by_email(self, email):
        return Customer.objects.filter(email=email).delete()[0]

    def page(self, segment, limit, offset):
        customers = Customer.objects.filter(segment=segment).order_by("id")[offset : offset + limit]
        return [(c.id, c.email) for c in customers]

    def savepoint_insert(self, c, x):
        with transaction.atomic():
            customer = Customer.objects.create(**c)
            try:
                with transaction.atomic():
                    self.insert_lower(x)
            except DatabaseError:
                pass
        return customer.id

    def read_as(self, user, id, purpose):
        with transaction.atomic(using=user):
            if purpose:
                with connections[user].cursor() as cur:
                    cur.execute(f"SET LOCAL pgveil.purpose = '{purpose}'")
            customer = Customer.objects.using(user).get(pk=id)
        return {f: getattr(customer, f) for f in FIELDS}

    def find_by_name(self, name):
        return self.find(full_name=name)

    def order_by_email(self, segment):
        return list(Customer.objects.filter(segment=segment).order_by("email").values_list("id"))

    def insert_lower(self, x):
        Customer.objects.create(email=Lower(Value(x["email"])), segment=x["segment"])

    def insert_as(self, user, x):
        Customer.objects.using(user).create(**x)

    def count_segment(self, segment):
        return Customer.objects.filter(segment=segment).count()


if __name__ == "__main__":
    binding = "-server" if os.environ.get("DJANGO_SERVER_SIDE_BINDING") == "1" else ""
    sys.exit(workload.Workload(f"django{binding}").run(Django()))
