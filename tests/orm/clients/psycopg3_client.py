"""The CRM workload with psycopg 3, in one of its three ways of sending
values: ``client`` (ClientCursor: values bound into the text, simple
protocol), ``server`` (server-side binding: $n parameters, extended protocol,
executemany pipelined) or ``binary`` (server-side binding with binary
parameters and binary results).

    python psycopg3_client.py client|server|binary
"""

import sys

import psycopg

import workload

COLUMNS = "full_name, email, phone, national_id, address, segment"
READ = "SELECT full_name, email, phone, national_id, address FROM customers WHERE id = {p}"


class Psycopg3(workload.Adapter):
    def __init__(self, mode):
        self.binary = mode == "binary"
        self.p = "%b" if self.binary else "%s"
        factory = psycopg.ClientCursor if mode == "client" else psycopg.Cursor
        self.factory = factory
        self.connections = {}
        self.app = self.connect("crm_user")

    def connect(self, user):
        if user not in self.connections:
            self.connections[user] = psycopg.connect(
                **workload.dsn(user), autocommit=True, cursor_factory=self.factory
            )
        return self.connections[user]

    def q(self, sql):
        return sql.format(p=self.p)

    def execute(self, sql, params=(), user="crm_user"):
        cur = self.connect(user).cursor(binary=self.binary)
        cur.execute(self.q(sql), params)
        return cur

    def values(self, c):
        return [c["full_name"], c["email"], c["phone"], c["national_id"], c["address"], c["segment"]]

    def insert_sql(self):
        return f"INSERT INTO customers ({COLUMNS}) VALUES ({', '.join(['{p}'] * 6)})"

    def insert_one(self, c):
        return tuple(self.execute(self.insert_sql() + " RETURNING id, email", self.values(c)).fetchone())

    def insert_batch(self, cs):
        cur = self.app.cursor(binary=self.binary)
        cur.executemany(self.q(self.insert_sql() + " RETURNING id"), [self.values(c) for c in cs], returning=True)
        ids = []
        while True:
            ids.append(cur.fetchone()[0])
            if not cur.nextset():
                return ids

    def insert_save(self, c):
        return self.execute(self.insert_sql() + " RETURNING id", self.values(c)).fetchone()[0]

    def find(self, condition, params):
        sql = f"SELECT id, full_name FROM customers WHERE {condition} ORDER BY id"
        return [tuple(r) for r in self.execute(sql, params).fetchall()]

    def find_by_email(self, email):
        return self.find("email = {p}", [email])

    def find_by_phone(self, phone):
        return self.find("phone = {p}", [phone])

    def find_in(self, emails):
        return [i for i, _ in self.find("email IN ({p}, {p})", emails)]

    def find_any(self, emails):
        return [i for i, _ in self.find("email = ANY({p})", [emails])]

    def update_phone(self, id, phone):
        return self.execute("UPDATE customers SET phone = {p} WHERE id = {p}", [phone, id]).rowcount

    def update_address_as_support(self, id, address):
        sql = "UPDATE customers SET address = {p} WHERE id = {p}"
        return self.execute(sql, [address, id], user="support_user").rowcount

    def next_id(self):
        return self.execute("SELECT nextval('customers_id_seq')").fetchone()[0]

    def upsert(self, id, c):
        sql = (
            f"INSERT INTO customers (id, {COLUMNS}) VALUES ({', '.join(['{p}'] * 7)}) "
            "ON CONFLICT (id) DO UPDATE SET full_name = EXCLUDED.full_name, email = EXCLUDED.email, "
            "phone = EXCLUDED.phone, national_id = EXCLUDED.national_id, address = EXCLUDED.address"
        )
        self.execute(sql, [id] + self.values(c))

    def delete_by_email(self, email):
        return self.execute("DELETE FROM customers WHERE email = {p}", [email]).rowcount

    def page(self, segment, limit, offset):
        sql = "SELECT id, email FROM customers WHERE segment = {p} ORDER BY id LIMIT {p} OFFSET {p}"
        return [tuple(r) for r in self.execute(sql, [segment, limit, offset]).fetchall()]

    def savepoint_insert(self, c, x):
        with self.app.transaction():
            id = self.insert_save(c)
            try:
                with self.app.transaction():
                    self.insert_lower(x)
            except psycopg.errors.FeatureNotSupported:
                pass
        return id

    def read_as(self, user, id, purpose):
        if purpose:
            self.execute(f"SET pgveil.purpose = '{purpose}'", user=user)
        row = self.execute(READ, [id], user=user).fetchone()
        if purpose:
            self.execute("RESET pgveil.purpose", user=user)
        return dict(zip(workload.crm.FIELDS, row))

    def find_by_name(self, name):
        return self.find("full_name = {p}", [name])

    def order_by_email(self, segment):
        return self.execute("SELECT id FROM customers WHERE segment = {p} ORDER BY email", [segment]).fetchall()

    def insert_lower(self, x):
        sql = "INSERT INTO customers (email, segment) VALUES (lower({p}), {p})"
        self.execute(sql, [x["email"], x["segment"]])

    def insert_as(self, user, x):
        self.execute(self.insert_sql(), self.values(x), user=user)

    def count_segment(self, segment):
        return self.execute("SELECT count(*) FROM customers WHERE segment = {p}", [segment]).fetchone()[0]


if __name__ == "__main__":
    mode = sys.argv[1]
    sys.exit(workload.Workload(f"psycopg3-{mode}").run(Psycopg3(mode)))
