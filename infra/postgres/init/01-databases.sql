-- One database per service (each service owns its data). Runs once, when the
-- compose postgres volume is created; the native runner creates the same names.
CREATE DATABASE interchange_users;
CREATE DATABASE interchange_events;
CREATE DATABASE interchange_orders;
CREATE DATABASE interchange_notifications;
