-- The full plugin interface (dc-plugin-api) version a plugin was built against,
-- as recorded in its library header (e.g. 1.1.0). NULL for versions registered
-- before this column existed (they were all interface 1.0).
ALTER TABLE plugin_versions ADD COLUMN interface_abi TEXT;
