"""The CRM workload every Python client of the ORM suite runs.

A client supplies an adapter: methods that do one CRM operation each the way
its driver or ORM does it naturally (see ``Adapter``). ``run`` calls them in
order as steps; a step that raises or returns the wrong answer is reported
``FAIL`` with the error's SQLSTATE and message, and the workload goes on.
What each role reads is written to the observations file for ``crm.py
check``. The plan (the values to write) comes from ``crm.py plan``.

Environment: ORM_PLAN, ORM_OBSERVED, PGHOST, PGPORT (pgveil's), PGDATABASE,
ORM_PASSWORD (every CRM login's password).
"""

import os
import sys
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import crm  # noqa: E402


def dsn(user):
    """Connection settings for ``user`` through pgveil."""
    return {
        "host": os.environ["PGHOST"],
        "port": int(os.environ["PGPORT"]),
        "dbname": os.environ["PGDATABASE"],
        "user": user,
        "password": os.environ["ORM_PASSWORD"],
    }


def url(scheme, user):
    d = dsn(user)
    return f"{scheme}://{user}:{d['password']}@{d['host']}:{d['port']}/{d['dbname']}"


def sqlstate(error):
    """The SQLSTATE of a driver error, through ORM wrappers."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        for attr in ("sqlstate", "pgcode"):
            code = getattr(error, attr, None)
            if isinstance(code, str):
                return code
        error = getattr(error, "orig", None) or error.__cause__ or error.__context__
    return None


class Failed(Exception):
    pass


def expect_equal(what, got, want):
    if got != want:
        raise Failed(f"{what}: expected {want!r}, got {got!r}")


class Workload:
    def __init__(self, client):
        self.client = client
        self.segment, self.customers, self.new = crm.read_plan(os.environ["ORM_PLAN"])
        self.observed = open(os.environ["ORM_OBSERVED"], "w", encoding="utf-8")
        self.failures = 0
        self.ids = {}

    def step(self, name, action):
        try:
            action()
            print(f"PASS {self.client} {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            self.failures += 1
            code = sqlstate(e)
            detail = f"[{code}] " if code else ""
            message = " ".join(str(e).split())[:400]
            print(f"FAIL {self.client} {name}: {detail}{type(e).__name__}: {message}", flush=True)
            if os.environ.get("ORM_TRACE"):
                traceback.print_exc()

    def expect_error(self, name, code, action):
        """A step that must fail with SQLSTATE ``code``."""

        def run():
            try:
                action()
            except Exception as e:  # noqa: BLE001
                expect_equal("SQLSTATE", sqlstate(e), code)
                return
            raise Failed(f"succeeded, expected SQLSTATE {code}")

        self.step(name, run)

    def view(self, user, purpose, key, values):
        fields = [crm.NULL if values[f] is None else values[f] for f in crm.FIELDS]
        line = ["view", user, purpose or "-", key] + fields
        self.observed.write("\t".join(line) + "\n")

    def c(self, key, **changes):
        """Customer ``key`` of the plan, with its segment, and changes."""
        return dict(self.customers[key], segment=self.segment, **changes)

    def run(self, a):
        """Runs every step against adapter ``a``; returns the exit code."""
        c, ids, new = self.c, self.ids, self.new

        def insert_one():
            ids["c0"], email = a.insert_one(c("c0"))
            expect_equal("RETURNING email", email, c("c0")["email"])

        def insert_batch():
            batch = a.insert_batch([c(k) for k in ("c1", "c2", "c3", "c4")])
            expect_equal("ids returned", len(batch), 4)
            ids.update(zip(("c1", "c2", "c3", "c4"), batch))

        def insert_save():
            ids["c5"] = a.insert_save(c("c5"))

        def lookup(method, field, key):
            return lambda: expect_equal(
                f"{method} {key}",
                getattr(a, method)(c(key)[field]),
                [(ids[key], c(key)["full_name"])],
            )

        def lookup_many(method, keys):
            emails = [c(k)["email"] for k in keys]
            return lambda: expect_equal(
                f"{method} {keys}", sorted(getattr(a, method)(emails)), sorted(ids[k] for k in keys)
            )

        def update_phone():
            expect_equal("rows updated", a.update_phone(ids["c1"], new["phone"]), 1)
            expect_equal("new phone", a.find_by_phone(new["phone"]), [(ids["c1"], c("c1")["full_name"])])
            expect_equal("old phone", a.find_by_phone(c("c1")["phone"]), [])

        def update_address():
            expect_equal("rows updated", a.update_address_as_support(ids["c2"], new["address"]), 1)

        def upsert():
            ids["c6"] = a.next_id()
            a.upsert(ids["c6"], c("c6"))
            a.upsert(ids["c6"], c("c6", email=new["email"]))
            expect_equal("upserted", a.find_by_email(new["email"]), [(ids["c6"], c("c6")["full_name"])])
            expect_equal("old e-mail", a.find_by_email(c("c6")["email"]), [])

        def delete():
            expect_equal("rows deleted", a.delete_by_email(c("c5")["email"]), 1)
            expect_equal("after delete", a.find_by_email(c("c5")["email"]), [])

        def page():
            want = [(ids[k], c(k)["email"]) for k in ("c1", "c2", "c3")]
            expect_equal("page 2 of 3", a.page(self.segment, 3, 1), want)

        def savepoint():
            ids["c7"] = a.savepoint_insert(c("c7"), c("x"))
            expect_equal("c7", a.find_by_email(c("c7")["email"]), [(ids["c7"], c("c7")["full_name"])])

        def read_as_roles():
            for user in crm.USERS:
                for purpose in (None, "kyc"):
                    for key in crm.READ_KEYS:
                        self.view(user, purpose, key, a.read_as(user, ids[key], purpose))

        def nothing_else_written():
            expect_equal("rows of this client", a.count_segment(self.segment), 7)

        self.step("insert_one", insert_one)
        self.step("insert_batch", insert_batch)
        self.step("insert_save", insert_save)
        self.step("lookup_email", lookup("find_by_email", "email", "c3"))
        self.step("lookup_phone", lookup("find_by_phone", "phone", "c4"))
        self.step("lookup_in", lookup_many("find_in", ["c1", "c3"]))
        self.step("lookup_any", lookup_many("find_any", ["c2", "c4"]))
        self.step("update_phone", update_phone)
        self.step("update_address_support", update_address)
        self.step("upsert", upsert)
        self.step("delete", delete)
        self.step("page", page)
        self.step("savepoint", savepoint)
        self.step("read_as_roles", read_as_roles)
        x = c("x")
        self.expect_error("refused_randomized_search", "0A000", lambda: a.find_by_name(x["full_name"]))
        self.expect_error("refused_order_by", "0A000", lambda: a.order_by_email(self.segment))
        self.expect_error("refused_computed_write", "0A000", lambda: a.insert_lower(x))
        self.expect_error("denied_analyst_insert", "42501", lambda: a.insert_as("analyst_user", x))
        self.step("nothing_else_written", nothing_else_written)
        self.observed.close()
        print(f"DONE {self.client} failures={self.failures}", flush=True)
        return 1 if self.failures else 0


class Adapter:
    """What a client implements. Customers are dicts of crm.FIELDS plus
    ``segment``; ``id`` is the customer's id. Lookups return
    ``[(id, full_name)]`` sorted by id."""

    def insert_one(self, c):
        """Single INSERT as crm_app; returns (id, email) from RETURNING."""

    def insert_batch(self, cs):
        """Batch INSERT (executemany, bulk_create, ...); returns the ids."""

    def insert_save(self, c):
        """Another single INSERT (an ORM ``save``); returns the id."""

    def find_by_email(self, email): ...

    def find_by_phone(self, phone): ...

    def find_in(self, emails):
        """Ids of ``email IN (...)``."""

    def find_any(self, emails):
        """Ids of ``email = ANY(array)``, or the client's array form."""

    def update_phone(self, id, phone):
        """As crm_app; returns the row count."""

    def update_address_as_support(self, id, address):
        """As support_user; returns the row count."""

    def next_id(self):
        """A new id from customers_id_seq."""

    def upsert(self, id, c):
        """INSERT ... ON CONFLICT (id) DO UPDATE of every column."""

    def delete_by_email(self, email):
        """Returns the row count."""

    def page(self, segment, limit, offset):
        """[(id, email)] of the segment ordered by id, LIMIT and OFFSET."""

    def savepoint_insert(self, c, x):
        """In one transaction: insert ``c``; in a savepoint, the refused
        ``insert_lower(x)``, rolled back to the savepoint; commit.
        Returns the id of ``c``."""

    def read_as(self, user, id, purpose):
        """Customer ``id`` read as ``user``, with ``SET pgveil.purpose`` if
        ``purpose``: a dict of crm.FIELDS, None for NULL."""

    def find_by_name(self, name):
        """WHERE full_name = ...: refused (randomized encryption)."""

    def order_by_email(self, segment):
        """ORDER BY email: refused."""

    def insert_lower(self, x):
        """INSERT with email = lower(param): refused."""

    def insert_as(self, user, x):
        """INSERT as ``user``."""

    def count_segment(self, segment):
        """Rows of the segment, as crm_app."""
