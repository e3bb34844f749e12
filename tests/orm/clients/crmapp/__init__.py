"""A minimal Django app for the ORM suite: the sample CRM's customers."""
