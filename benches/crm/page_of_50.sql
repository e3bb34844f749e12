-- Read a page of 50 customers (keyset pagination), as a list view does:
-- many DataRows with sensitive columns flowing back to the client.
\set after random(0, :ncust - 50)
SELECT id, full_name, email, phone, segment
  FROM customers WHERE id > :after ORDER BY id LIMIT 50;
