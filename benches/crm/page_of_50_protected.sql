-- Read a page of 50 customers with all five protected columns (keyset
-- pagination): 250 protected values per page flowing back to the client.
-- Through pgveil with the CRM policy each is decrypted for crm_app.
\set after random(0, :ncust - 50)
SELECT id, full_name, email, phone, national_id, address, segment
  FROM customers WHERE id > :after ORDER BY id LIMIT 50;
