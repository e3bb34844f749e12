-- Sample CRM schema for the pgveil demo and tests.
--
-- Run it against PostgreSQL directly (it creates no data). Rows are then
-- written through pgveil, so that the personal-data columns listed in
-- crm.toml reach the server encrypted. Running it twice is harmless.
--
-- Encrypted values are stored as text in a text column (a bytea column
-- would hold them as bytes), so every protected column here is text.

-- Group roles. Login roles are made members of these, and pgveil decides
-- what each session sees from the roles it belongs to.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['crm_app', 'support', 'analyst', 'kyc_officer'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
END
$$;

-- Customers: the personal data, protected by crm.toml.
CREATE TABLE IF NOT EXISTS public.customers (
    id          bigserial PRIMARY KEY,
    full_name   text,
    email       text,
    phone       text,
    national_id text,
    address     text,
    segment     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Orders: no personal data, not protected; joins to customers by id.
CREATE TABLE IF NOT EXISTS public.orders (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers (id),
    amount      numeric(12, 2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Notes written by support agents; not protected.
CREATE TABLE IF NOT EXISTS public.customer_notes (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers (id),
    note        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The application: reads and writes everything.
GRANT SELECT, INSERT, UPDATE, DELETE
    ON public.customers, public.orders, public.customer_notes TO crm_app;
GRANT USAGE ON SEQUENCE
    public.customers_id_seq, public.orders_id_seq, public.customer_notes_id_seq TO crm_app;

-- Support agents: read customers and orders, correct a customer's phone
-- and address, and keep notes.
GRANT SELECT ON public.customers, public.orders, public.customer_notes TO support;
GRANT UPDATE (phone, address) ON public.customers TO support;
GRANT INSERT ON public.customer_notes TO support;
GRANT USAGE ON SEQUENCE public.customer_notes_id_seq TO support;

-- Analysts: read-only, for reporting.
GRANT SELECT ON public.customers, public.orders, public.customer_notes TO analyst;

-- KYC officers: read customers to verify identities.
GRANT SELECT ON public.customers TO kyc_officer;

-- Ciphertext guards (`pgveil guard --policy policies/crm.toml`): every protected
-- column admits only NULL and pgveil's ciphertext, so that a write pgveil does
-- not see (a view, function, rule or trigger, a direct connection) fails
-- instead of storing plaintext. The tables are new, so they are validated
-- at once.
DO $pgveil$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.customers'::regclass AND conname = 'pgveil_guard_address') THEN
        CASE (SELECT CASE WHEN t.typoutput = 'pg_catalog.byteaout'::pg_catalog.regproc THEN 'bytea' WHEN t.typcategory = 'S' AND t.typoutput <> 'pg_catalog.nameout'::pg_catalog.regproc THEN 'text' ELSE 'other' END
              FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = 'public.customers'::regclass AND a.attname = 'address' AND NOT a.attisdropped)
        WHEN 'bytea' THEN
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_address CHECK (address IS NULL OR substring(address FROM 1 FOR 4) = decode('50560101', 'hex') AND octet_length(address) >= 40) NOT VALID;
        WHEN 'text' THEN
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_address CHECK (address IS NULL OR address::text ~ '^pgv1:UFYBA[QRSTUVWXYZabcdef][A-Za-z0-9_-]*$' AND octet_length(address::text) >= 59) NOT VALID;
        ELSE
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_address CHECK (address IS NULL) NOT VALID;
        END CASE;
    END IF;
END
$pgveil$;
DO $pgveil$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.customers'::regclass AND conname = 'pgveil_guard_email') THEN
        CASE (SELECT CASE WHEN t.typoutput = 'pg_catalog.byteaout'::pg_catalog.regproc THEN 'bytea' WHEN t.typcategory = 'S' AND t.typoutput <> 'pg_catalog.nameout'::pg_catalog.regproc THEN 'text' ELSE 'other' END
              FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = 'public.customers'::regclass AND a.attname = 'email' AND NOT a.attisdropped)
        WHEN 'bytea' THEN
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_email CHECK (email IS NULL OR substring(email FROM 1 FOR 4) = decode('50560102', 'hex') AND octet_length(email) >= 28) NOT VALID;
        WHEN 'text' THEN
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_email CHECK (email IS NULL OR email::text ~ '^pgv1:UFYBA[ghijklmnopqrstuv][A-Za-z0-9_-]*$' AND octet_length(email::text) >= 43) NOT VALID;
        ELSE
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_email CHECK (email IS NULL) NOT VALID;
        END CASE;
    END IF;
END
$pgveil$;
DO $pgveil$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.customers'::regclass AND conname = 'pgveil_guard_full_name') THEN
        CASE (SELECT CASE WHEN t.typoutput = 'pg_catalog.byteaout'::pg_catalog.regproc THEN 'bytea' WHEN t.typcategory = 'S' AND t.typoutput <> 'pg_catalog.nameout'::pg_catalog.regproc THEN 'text' ELSE 'other' END
              FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = 'public.customers'::regclass AND a.attname = 'full_name' AND NOT a.attisdropped)
        WHEN 'bytea' THEN
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_full_name CHECK (full_name IS NULL OR substring(full_name FROM 1 FOR 4) = decode('50560101', 'hex') AND octet_length(full_name) >= 40) NOT VALID;
        WHEN 'text' THEN
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_full_name CHECK (full_name IS NULL OR full_name::text ~ '^pgv1:UFYBA[QRSTUVWXYZabcdef][A-Za-z0-9_-]*$' AND octet_length(full_name::text) >= 59) NOT VALID;
        ELSE
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_full_name CHECK (full_name IS NULL) NOT VALID;
        END CASE;
    END IF;
END
$pgveil$;
DO $pgveil$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.customers'::regclass AND conname = 'pgveil_guard_national_id') THEN
        CASE (SELECT CASE WHEN t.typoutput = 'pg_catalog.byteaout'::pg_catalog.regproc THEN 'bytea' WHEN t.typcategory = 'S' AND t.typoutput <> 'pg_catalog.nameout'::pg_catalog.regproc THEN 'text' ELSE 'other' END
              FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = 'public.customers'::regclass AND a.attname = 'national_id' AND NOT a.attisdropped)
        WHEN 'bytea' THEN
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_national_id CHECK (national_id IS NULL OR substring(national_id FROM 1 FOR 4) = decode('50560101', 'hex') AND octet_length(national_id) >= 40) NOT VALID;
        WHEN 'text' THEN
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_national_id CHECK (national_id IS NULL OR national_id::text ~ '^pgv1:UFYBA[QRSTUVWXYZabcdef][A-Za-z0-9_-]*$' AND octet_length(national_id::text) >= 59) NOT VALID;
        ELSE
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_national_id CHECK (national_id IS NULL) NOT VALID;
        END CASE;
    END IF;
END
$pgveil$;
DO $pgveil$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'public.customers'::regclass AND conname = 'pgveil_guard_phone') THEN
        CASE (SELECT CASE WHEN t.typoutput = 'pg_catalog.byteaout'::pg_catalog.regproc THEN 'bytea' WHEN t.typcategory = 'S' AND t.typoutput <> 'pg_catalog.nameout'::pg_catalog.regproc THEN 'text' ELSE 'other' END
              FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = 'public.customers'::regclass AND a.attname = 'phone' AND NOT a.attisdropped)
        WHEN 'bytea' THEN
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_phone CHECK (phone IS NULL OR substring(phone FROM 1 FOR 4) = decode('50560102', 'hex') AND octet_length(phone) >= 28) NOT VALID;
        WHEN 'text' THEN
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_phone CHECK (phone IS NULL OR phone::text ~ '^pgv1:UFYBA[ghijklmnopqrstuv][A-Za-z0-9_-]*$' AND octet_length(phone::text) >= 43) NOT VALID;
        ELSE
            ALTER TABLE public.customers ADD CONSTRAINT pgveil_guard_phone CHECK (phone IS NULL) NOT VALID;
        END CASE;
    END IF;
END
$pgveil$;

ALTER TABLE public.customers VALIDATE CONSTRAINT pgveil_guard_address;
ALTER TABLE public.customers VALIDATE CONSTRAINT pgveil_guard_email;
ALTER TABLE public.customers VALIDATE CONSTRAINT pgveil_guard_full_name;
ALTER TABLE public.customers VALIDATE CONSTRAINT pgveil_guard_national_id;
ALTER TABLE public.customers VALIDATE CONSTRAINT pgveil_guard_phone;
