-- Register a new customer; every value is sent as a bind parameter.
\set r random(1, 1000000000)
SELECT 'New Customer ' || :r AS full_name,
       'new' || :r || '@example.org' AS email,
       '+44-20-' || lpad((:r % 100000000)::text, 8, '0') AS phone,
       lpad((:r % 1000000000)::text, 9, '0') AS national_id,
       (:r % 999) || ' High Street, Exeter' AS address \gset
INSERT INTO customers (full_name, email, phone, national_id, address, segment)
VALUES (:full_name, :email, :phone, :national_id, :address, 'retail');
