-- Login users for the sample CRM's roles (policies/crm.sql creates the
-- roles), each with the password 'pw': for trying the compose set-up only.
CREATE ROLE crm_user LOGIN PASSWORD 'pw' IN ROLE crm_app;
CREATE ROLE support_user LOGIN PASSWORD 'pw' IN ROLE support;
CREATE ROLE analyst_user LOGIN PASSWORD 'pw' IN ROLE analyst;
CREATE ROLE kyc_user LOGIN PASSWORD 'pw' IN ROLE kyc_officer;
