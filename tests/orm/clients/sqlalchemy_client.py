"""The CRM workload with the SQLAlchemy 2 ORM on psycopg2: a mapped
``Customer`` class, ``session.add``/``add_all`` (insertmanyvalues batches),
``select()`` with ``in_`` and ``any_``, ``update()``, the PostgreSQL
``insert().on_conflict_do_update``, ``session.delete``, ``limit``/``offset``
and ``begin_nested`` savepoints.
"""

import sys

from sqlalchemy import BigInteger, Text, create_engine, func, insert, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import workload


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = {"schema": "public"}
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    full_name: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    national_id: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(Text)
    segment: Mapped[str | None] = mapped_column(Text)


class SqlAlchemy(workload.Adapter):
    def __init__(self):
        self.engines = {}

    def session(self, user="crm_user"):
        if user not in self.engines:
            self.engines[user] = create_engine(workload.url("postgresql+psycopg2", user))
        return Session(self.engines[user])

    def insert_one(self, c):
        with self.session() as s, s.begin():
            customer = Customer(**c)
            s.add(customer)
            s.flush()
            s.refresh(customer)
            return customer.id, customer.email

    def insert_batch(self, cs):
        with self.session() as s, s.begin():
            customers = [Customer(**c) for c in cs]
            s.add_all(customers)
            s.flush()
            return [customer.id for customer in customers]

    def insert_save(self, c):
        with self.session() as s, s.begin():
            customer = Customer(**c)
            s.add(customer)
            s.flush()
            return customer.id

    def find(self, condition):
        with self.session() as s:
            rows = s.execute(select(Customer.id, Customer.full_name).where(condition).order_by(Customer.id))
            return [tuple(r) for r in rows]

    def find_by_email(self, email):
        return self.find(Customer.email == email)

    def find_by_phone(self, phone):
        return self.find(Customer.phone == phone)

    def find_in(self, emails):
        return [i for i, _ in self.find(Customer.email.in_(emails))]

    def find_any(self, emails):
        return [i for i, _ in self.find(Customer.email == func.any(postgresql.array(emails, type_=Text)))]

    def update_phone(self, id, phone):
        with self.session() as s, s.begin():
            customer = s.get(Customer, id)
            customer.phone = phone
            s.flush()
            return 1

    def update_address_as_support(self, id, address):
        with self.session("support_user") as s, s.begin():
            return s.execute(update(Customer).where(Customer.id == id).values(address=address)).rowcount

    def next_id(self):
        with self.session() as s:
            return s.execute(select(func.nextval("customers_id_seq"))).scalar_one()

    def upsert(self, id, c):
        statement = postgresql.insert(Customer).values(id=id, **c)
        columns = {name: statement.excluded[name] for name in workload.crm.FIELDS}
        with self.session() as s, s.begin():
            s.execute(statement.on_conflict_do_update(index_elements=[Customer.id], set_=columns))

    def delete_by_email(self, email):
        with self.session() as s, s.begin():
            customers = s.scalars(select(Customer).where(Customer.email == email)).all()
            for customer in customers:
                s.delete(customer)
            return len(customers)

    def page(self, segment, limit, offset):
        with self.session() as s:
            query = select(Customer).where(Customer.segment == segment).order_by(Customer.id)
            return [(r.id, r.email) for r in s.scalars(query.limit(limit).offset(offset))]

    def savepoint_insert(self, c, x):
        with self.session() as s, s.begin():
            customer = Customer(**c)
            s.add(customer)
            s.flush()
            try:
                with s.begin_nested():
                    s.execute(insert(Customer).values(email=func.lower(x["email"]), segment=x["segment"]))
            except DBAPIError:
                pass
            return customer.id

    def read_as(self, user, id, purpose):
        with self.session(user) as s, s.begin():
            if purpose:
                s.execute(text(f"SET LOCAL pgveil.purpose = '{purpose}'"))
            customer = s.get(Customer, id)
            return {f: getattr(customer, f) for f in workload.crm.FIELDS}

    def find_by_name(self, name):
        return self.find(Customer.full_name == name)

    def order_by_email(self, segment):
        with self.session() as s:
            return s.scalars(select(Customer.id).where(Customer.segment == segment).order_by(Customer.email)).all()

    def insert_lower(self, x):
        with self.session() as s, s.begin():
            s.execute(insert(Customer).values(email=func.lower(x["email"]), segment=x["segment"]))

    def insert_as(self, user, x):
        with self.session(user) as s, s.begin():
            s.add(Customer(**x))

    def count_segment(self, segment):
        with self.session() as s:
            return s.execute(select(func.count()).where(Customer.segment == segment)).scalar_one()


if __name__ == "__main__":
    sys.exit(workload.Workload("sqlalchemy").run(SqlAlchemy()))
