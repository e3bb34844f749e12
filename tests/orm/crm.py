"""The sample CRM's workload data and what each role must see of it.

One module that every client of the ORM suite relies on, whatever its
language:

- ``plan CLIENT INDEX`` writes the client's plan: the customers it creates
  and the new values it writes later, as tab-separated lines (see
  ``README.md`` for the format). Every value is unique to the client, so a
  value found in the database names the client that wrote it.
- ``check PLAN OBSERVED`` compares what the client read as each role with
  what ``policies/crm.toml`` grants that role (plaintext, mask, pseudonym
  or NULL), computed here independently of pgveil.
- ``pseudonyms OBSERVED...`` checks that pseudonyms are stable across
  clients: one per plaintext value, never the same for two values.
- ``scan PLANS_DIR PATH...`` looks for every plaintext value of every plan
  in files and directories (table dumps, pg_dump output, data files).

Exit code 0 when everything matches, 1 otherwise.
"""

import os
import re
import sys

# The customers of a plan and what the workload does with each one.
KEYS = {
    "c0": "inserted alone, RETURNING checked",
    "c1": "batch insert; phone updated by crm_app",
    "c2": "batch insert; address updated by support",
    "c3": "batch insert; looked up by e-mail",
    "c4": "batch insert; looked up by phone",
    "c5": "inserted alone, then deleted",
    "c6": "written by upsert twice (insert, then update of e-mail)",
    "c7": "inserted in a transaction, after a savepoint rolled back",
    "x": "only in statements that must fail: never stored",
}
FIELDS = ["full_name", "email", "phone", "national_id", "address"]
# Customers read as every role, after their updates.
READ_KEYS = ["c1", "c2"]
USERS = {
    "crm_user": "crm_app",
    "support_user": "support",
    "analyst_user": "analyst",
    "kyc_user": "kyc_officer",
}
NULL = "\\N"

# policies/crm.toml: role -> column -> action; columns missing for a role
# are NULL. national_id needs purpose 'kyc' for plaintext.
POLICY = {
    "crm_app": {f: "plaintext" for f in FIELDS},
    "support": {f: "masked" for f in FIELDS},
    "analyst": {"email": "pseudonym", "phone": "pseudonym"},
    "kyc_officer": {"national_id": "plaintext"},
}
MASKS = {
    "full_name": "initial",
    "email": "email",
    "phone": "phone",
    "national_id": "last4",
    "address": "redact",
}
PURPOSE_BOUND = {"national_id": "kyc"}
PSEUDONYM = re.compile(r"^pgvp_[0-9a-f]{32}$")


def customer(index, n, key):
    """The five protected values of customer ``key`` of client ``index``."""
    tag = f"{index:02d}{n}"
    return {
        "full_name": f"Zoë Ørsted{tag} Nakamura",
        "email": f"zoe.{tag}.orsted@example.com",
        "phone": f"+1 (555) 4{index:02d}-{n:02d}{7 if key == 'x' else 3}9",
        "national_id": f"NID{index:02d}{n:02d}9{key[-1]}7Q",
        "address": f"{n + 1} Rue des Écoles {tag}, Paris",
    }


def plan(client, index):
    """(customers by key, new values by field) of one client."""
    customers = {key: customer(index, n, key) for n, key in enumerate(KEYS)}
    new = {
        "phone": f"+1 (555) 5{index:02d}-1{index:02d}8",
        "address": f"9 Quai Mégisserie {index:02d}, Paris",
        "email": f"zoe.{index:02d}.upserted@example.com",
    }
    return client, customers, new


def write_plan(client, index, out):
    client, customers, new = plan(client, index)
    out.write(f"segment\t{client}\n")
    for key, values in customers.items():
        out.write("\t".join([key] + [values[f] for f in FIELDS]) + "\n")
    for field, value in new.items():
        out.write(f"new\t{field}\t{value}\n")


def read_plan(path):
    """The plan file as (segment, customers by key, new values by field)."""
    segment, customers, new = None, {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "segment":
                segment = parts[1]
            elif parts[0] == "new":
                new[parts[1]] = parts[2]
            else:
                customers[parts[0]] = dict(zip(FIELDS, parts[1:]))
    return segment, customers, new


def final_values(customers, new):
    """The values stored after the workload's updates."""
    final = {key: dict(values) for key, values in customers.items()}
    final["c1"]["phone"] = new["phone"]
    final["c2"]["address"] = new["address"]
    final["c6"]["email"] = new["email"]
    return final


# Masks, from the policy documentation (src/policy/mask.rs's module doc).


def mask_initial_word(word):
    return f"{word[0]}***" if len(word) > 1 else "***"


def mask(name, value):
    if value == "" and name != "redact":
        return ""
    if name == "redact":
        return "****"
    if name == "initial":
        return re.sub(r"\S+", lambda m: mask_initial_word(m.group(0)), value)
    if name == "email":
        local, at, domain = value.rpartition("@")
        if not at or not local or not domain:
            return "****"
        return f"{mask_initial_word(local)}@{domain}"
    if name == "last4":
        return "*" * len(value) if len(value) <= 4 else "*" * (len(value) - 4) + value[-4:]
    if name == "phone":
        digits = sum(c.isdigit() for c in value)
        shown_from = digits - 4 if digits > 4 else digits
        out, seen = [], 0
        for c in value:
            if c.isdigit():
                seen += 1
                out.append(c if seen > shown_from else "*")
            else:
                out.append(c if c in "+ -.()" else "*")
        return "".join(out)
    raise ValueError(name)


def expected(role, purpose, field, value):
    """What ``role`` reads of ``value`` in ``field``: a string, None (NULL)
    or "pseudonym" (checked by pattern)."""
    action = POLICY[role].get(field, "null")
    if action == "plaintext" and PURPOSE_BOUND.get(field, purpose) != purpose:
        action = "null"
    if action == "plaintext":
        return value
    if action == "masked":
        return mask(MASKS[field], value)
    if action == "pseudonym":
        return "pseudonym"
    return None


def read_observed(path):
    """View lines: (user, purpose, key, {field: value or None})."""
    views = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] != "view":
                continue
            user, purpose, key = parts[1:4]
            values = {f: (None if v == NULL else v) for f, v in zip(FIELDS, parts[4:])}
            views.append((user, None if purpose == "-" else purpose, key, values))
    return views


def check(plan_path, observed_path):
    """Problems with what a client read, one line each."""
    _, customers, new = read_plan(plan_path)
    final = final_values(customers, new)
    problems, seen = [], set()
    for user, purpose, key, values in read_observed(observed_path):
        role = USERS[user]
        seen.add((user, purpose, key))
        for field in FIELDS:
            want = expected(role, purpose, field, final[key][field])
            got = values.get(field)
            ok = PSEUDONYM.match(got or "") if want == "pseudonym" else got == want
            if not ok:
                problems.append(
                    f"{user} purpose={purpose or '-'} {key}.{field}: expected {want!r}, got {got!r}"
                )
    for user in USERS:
        for purpose in (None, "kyc"):
            for key in READ_KEYS:
                if (user, purpose, key) not in seen:
                    problems.append(f"{user} purpose={purpose or '-'} {key}: not read")
    return problems


def check_pseudonyms(plan_paths, observed_paths):
    """One pseudonym per plaintext value, across every client."""
    by_value, problems = {}, []
    for plan_path, observed_path in zip(plan_paths, observed_paths):
        _, customers, new = read_plan(plan_path)
        final = final_values(customers, new)
        for user, _, key, values in read_observed(observed_path):
            for field in FIELDS:
                got = values.get(field)
                if got and PSEUDONYM.match(got):
                    by_value.setdefault((field, final[key][field]), set()).add(got)
    owners = {}
    for (field, value), tokens in by_value.items():
        if len(tokens) > 1:
            problems.append(f"{field} {value!r} has {len(tokens)} different pseudonyms")
        for token in tokens:
            other = owners.setdefault(token, (field, value))
            if other != (field, value):
                problems.append(f"pseudonym {token} stands for two values: {other}, {(field, value)}")
    return problems


def plaintexts(plans_dir):
    """Every protected value any plan writes (or tries to), with its origin."""
    found = {}
    for name in sorted(os.listdir(plans_dir)):
        if not name.endswith(".plan"):
            continue
        segment, customers, new = read_plan(os.path.join(plans_dir, name))
        for key, values in customers.items():
            for field, value in values.items():
                found[value] = f"{segment} {key}.{field}"
        for field, value in new.items():
            found[value] = f"{segment} new {field}"
    return found


def files_under(paths):
    for path in paths:
        if os.path.isdir(path):
            for root, _, names in os.walk(path):
                for name in names:
                    yield os.path.join(root, name)
        else:
            yield path


def scan(plans_dir, paths):
    """Hits of plaintext values in the files: (path, origin) lines."""
    needles = {value.encode("utf-8"): origin for value, origin in plaintexts(plans_dir).items()}
    hits, scanned = [], 0
    for path in files_under(paths):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        scanned += 1
        hits.extend(f"{path}: {origin}" for needle, origin in needles.items() if needle in data)
    return hits, scanned, len(needles)


def report(problems, what):
    for p in problems:
        print(f"  {what}: {p}")
    return 1 if problems else 0


def main(argv):
    command = argv[1] if len(argv) > 1 else ""
    if command == "plan":
        write_plan(argv[2], int(argv[3]), sys.stdout)
        return 0
    if command == "check":
        return report(check(argv[2], argv[3]), "wrong view")
    if command == "pseudonyms":
        half = (len(argv) - 2) // 2
        return report(check_pseudonyms(argv[2 : 2 + half], argv[2 + half :]), "pseudonym")
    if command == "scan":
        hits, scanned, count = scan(argv[2], argv[3:])
        print(f"scanned {scanned} files for {count} plaintext values: {len(hits)} hits")
        return report(hits, "PLAINTEXT")
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
