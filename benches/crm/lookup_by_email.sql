-- Look one customer up by e-mail address (equality on a sensitive column).
-- pgbench cannot build strings, so a first query that touches no table
-- builds the address; the lookup then sends it as a bind parameter
-- (run with -M prepared), which is what an encrypting proxy must handle.
\set id random(1, :ncust)
SELECT 'customer' || :id || '@example.com' AS email \gset
SELECT id, full_name, email, phone, national_id, address, segment
  FROM customers WHERE email = :email;
