-- CRM benchmark schema and seed data (plaintext columns).
-- Loaded once, directly into PostgreSQL, by benches/e2e.sh with
-- psql -v ncust=N. When encryption policies arrive, the same table is
-- used with email, phone, national_id and address encrypted by pgveil.
SET client_min_messages = warning;
DROP TABLE IF EXISTS customers;
CREATE TABLE customers (
    id          bigserial PRIMARY KEY,
    full_name   text,
    email       text,
    phone       text,
    national_id text,
    address     text,
    segment     text,
    created_at  timestamptz DEFAULT now()
);
-- Deterministic, realistic-looking rows: customer N has the e-mail
-- customerN@example.com, which lookup_by_email.sql relies on.
INSERT INTO customers (full_name, email, phone, national_id, address, segment)
SELECT 'Customer ' || i,
       'customer' || i || '@example.com',
       '+1-555-' || lpad((i % 10000)::text, 4, '0'),
       lpad((i * 7919 % 1000000000)::text, 9, '0'),
       i || ' Main Street, Springfield',
       (ARRAY['retail', 'smb', 'enterprise', 'public'])[1 + i % 4]
FROM generate_series(1, :ncust) AS i;
CREATE INDEX customers_email_idx ON customers (email);
VACUUM ANALYZE customers;
