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
