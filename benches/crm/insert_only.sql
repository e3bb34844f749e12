-- Register a new customer: one INSERT, its five protected values sent as
-- bind parameters of about 20 characters (pgbench's variables are
-- numbers; their digits stand for the name, e-mail, phone, national id
-- and address). Through pgveil-policy each is encrypted; through
-- pass-through pgveil the same statement stores them as they are.
\set a random(1000000000000000000, 9000000000000000000)
\set b random(1000000000000000000, 9000000000000000000)
\set c random(1000000000000000000, 9000000000000000000)
\set d random(1000000000000000000, 9000000000000000000)
\set e random(1000000000000000000, 9000000000000000000)
INSERT INTO customers (full_name, email, phone, national_id, address, segment)
VALUES (:a, :b, :c, :d, :e, 'retail');
