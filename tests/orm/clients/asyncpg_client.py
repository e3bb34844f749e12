"""The CRM workload with asyncpg: its own protocol code, binary formats
for parameters and results, named prepared statements (its statement
cache), pipelined ``executemany``, arrays for ``= ANY($1)`` and nested
``transaction()`` blocks as savepoints.
"""

import asyncio
import sys

import asyncpg

import workload

COLUMNS = "full_name, email, phone, national_id, address, segment"
INSERT = f"INSERT INTO customers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
READ = "SELECT full_name, email, phone, national_id, address FROM customers WHERE id = $1"


def values(c):
    return [c["full_name"], c["email"], c["phone"], c["national_id"], c["address"], c["segment"]]


class Asyncpg(workload.Adapter):
    """Synchronous methods over one event loop, as the workload calls them."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.connections = {}
        self.app = self.connect("crm_user")

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def connect(self, user):
        if user not in self.connections:
            d = workload.dsn(user)
            self.connections[user] = self.run(
                asyncpg.connect(
                    host=d["host"], port=d["port"], user=user, password=d["password"], database=d["dbname"]
                )
            )
        return self.connections[user]

    def fetch(self, sql, *args, user="crm_user"):
        return [tuple(r) for r in self.run(self.connect(user).fetch(sql, *args))]

    def execute(self, sql, *args, user="crm_user"):
        """The row count of the command tag (0 for SET and RESET)."""
        status = self.run(self.connect(user).execute(sql, *args)).split()[-1]
        return int(status) if status.isdigit() else 0

    def insert_one(self, c):
        return self.fetch(INSERT + " RETURNING id, email", *values(c))[0]

    def insert_batch(self, cs):
        segment = cs[0]["segment"]
        before = {i for (i,) in self.fetch("SELECT id FROM customers WHERE segment = $1", segment)}
        self.run(self.app.executemany(INSERT, [values(c) for c in cs]))
        rows = self.fetch("SELECT id FROM customers WHERE segment = $1 ORDER BY id", segment)
        return [i for (i,) in rows if i not in before]

    def insert_save(self, c):
        return self.fetch(INSERT + " RETURNING id", *values(c))[0][0]

    def find(self, condition, *args):
        return self.fetch(f"SELECT id, full_name FROM customers WHERE {condition} ORDER BY id", *args)

    def find_by_email(self, email):
        return self.find("email = $1", email)

    def find_by_phone(self, phone):
        return self.find("phone = $1", phone)

    def find_in(self, emails):
        return [i for i, _ in self.find("email IN ($1, $2)", *emails)]

    def find_any(self, emails):
        return [i for i, _ in self.find("email = ANY($1::text[])", emails)]

    def update_phone(self, id, phone):
        return self.execute("UPDATE customers SET phone = $1 WHERE id = $2", phone, id)

    def update_address_as_support(self, id, address):
        return self.execute("UPDATE customers SET address = $1 WHERE id = $2", address, id, user="support_user")

    def next_id(self):
        return self.fetch("SELECT nextval('customers_id_seq')")[0][0]

    def upsert(self, id, c):
        self.execute(
            f"INSERT INTO customers (id, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (id) DO UPDATE SET full_name = EXCLUDED.full_name, email = EXCLUDED.email, "
            "phone = EXCLUDED.phone, national_id = EXCLUDED.national_id, address = EXCLUDED.address",
            id,
            *values(c),
        )

    def delete_by_email(self, email):
        return self.execute("DELETE FROM customers WHERE email = $1", email)

    def page(self, segment, limit, offset):
        sql = "SELECT id, email FROM customers WHERE segment = $1 ORDER BY id LIMIT $2 OFFSET $3"
        return self.fetch(sql, segment, limit, offset)

    def savepoint_insert(self, c, x):
        async def transaction():
            async with self.app.transaction():
                id = (await self.app.fetchrow(INSERT + " RETURNING id", *values(c)))[0]
                try:
                    async with self.app.transaction():
                        await self.app.execute(
                            "INSERT INTO customers (email, segment) VALUES (lower($1), $2)", x["email"], x["segment"]
                        )
                except asyncpg.FeatureNotSupportedError:
                    pass
                return id

        return self.run(transaction())

    def read_as(self, user, id, purpose):
        if purpose:
            self.execute(f"SET pgveil.purpose = '{purpose}'", user=user)
        row = self.fetch(READ, id, user=user)[0]
        if purpose:
            self.execute("RESET pgveil.purpose", user=user)
        return dict(zip(workload.crm.FIELDS, row))

    def find_by_name(self, name):
        return self.find("full_name = $1", name)

    def order_by_email(self, segment):
        return self.fetch("SELECT id FROM customers WHERE segment = $1 ORDER BY email", segment)

    def insert_lower(self, x):
        self.execute("INSERT INTO customers (email, segment) VALUES (lower($1), $2)", x["email"], x["segment"])

    def insert_as(self, user, x):
        self.execute(INSERT, *values(x), user=user)

    def count_segment(self, segment):
        return self.fetch("SELECT count(*) FROM customers WHERE segment = $1", segment)[0][0]


if __name__ == "__main__":
    sys.exit(workload.Workload("asyncpg").run(Asyncpg()))
