-- Change one customer's phone number (the new value is a bind parameter).
\set id random(1, :ncust)
\set n random(0, 9999)
SELECT '+1-555-' || lpad(:n::text, 4, '0') AS phone \gset
UPDATE customers SET phone = :phone WHERE id = :id;
