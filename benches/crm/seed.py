"""Writes the CRM seed rows of schema.sql as INSERT statements, for loading
through a pgveil with the CRM policy (which refuses INSERT ... SELECT into
protected columns, since it cannot encrypt computed values). The rows are
the same as schema.sql's, so both databases hold the same customers.

Usage: python3 seed.py NCUST | psql ...
"""

import sys

BATCH = 500
SEGMENTS = ["retail", "smb", "enterprise", "public"]


def row(i: int) -> str:
    values = [
        f"Customer {i}",
        f"customer{i}@example.com",
        f"+1-555-{i % 10000:04d}",
        f"{i * 7919 % 1000000000:09d}",
        f"{i} Main Street, Springfield",
        SEGMENTS[i % 4],
    ]
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def main() -> None:
    ncust = int(sys.argv[1])
    for start in range(1, ncust + 1, BATCH):
        rows = ",\n".join(row(i) for i in range(start, min(start + BATCH, ncust + 1)))
        print(
            "INSERT INTO customers (full_name, email, phone, national_id, address, segment) VALUES\n"
            + rows
            + ";"
        )


if __name__ == "__main__":
    main()
