-- The plant database of Inspector stations (PostgreSQL 13 or newer), schema version 1.
--
-- Run it once as the owner of the database (an administrator, not a station):
--     psql "postgresql://admin@plant-db/inspector" -f plant_schema.sql
-- or: inspector plant setup --plant postgresql://admin@plant-db/inspector
-- Running it again changes nothing that is already there.
--
-- Two group roles (NOLOGIN); give every station and every engineer a login of its own:
--     CREATE ROLE line1 LOGIN PASSWORD '...' IN ROLE inspector_station;   -- one per station
--     CREATE ROLE anna  LOGIN PASSWORD '...' IN ROLE inspector_engineer;  -- one per engineer
--   inspector_station:  inserts its own results, events and status (row-level security:
--                       station = its login name), reads its own rows and the published models.
--   inspector_engineer: reads everything, publishes models. Neither may change or delete rows.
-- A station's name in the plant is its login name.

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'inspector_station') THEN
        CREATE ROLE inspector_station NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'inspector_engineer') THEN
        CREATE ROLE inspector_engineer NOLOGIN;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS plant_schema (version integer NOT NULL);
INSERT INTO plant_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT FROM plant_schema);

-- Every verdict of every station, partitioned by month of the station's time. The key is
-- the station and its local row id: a replay inserts nothing twice. `received` is the
-- server's time (a station's clock may be wrong; its rows are ordered by local_id).
CREATE TABLE IF NOT EXISTS results (
    station       text NOT NULL DEFAULT current_user,
    local_id      bigint NOT NULL,
    product       text NOT NULL,
    source        text NOT NULL,
    verdict       text NOT NULL CHECK (verdict IN ('OK', 'NG', 'ERROR')),
    image_path    text,
    score         double precision,
    threshold     double precision,
    model_id      text,
    model_version integer,
    error         text,
    regions       jsonb NOT NULL DEFAULT '[]',
    latency_ms    double precision,
    time          timestamptz NOT NULL,
    received      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station, local_id, time)
) PARTITION BY RANGE (time);
CREATE TABLE IF NOT EXISTS results_default PARTITION OF results DEFAULT;  -- months without a partition
CREATE INDEX IF NOT EXISTS results_time ON results (time);
CREATE INDEX IF NOT EXISTS results_product_time ON results (product, time);

-- Verdict counts per station, product and hour (UTC), kept by the same statement that
-- inserts the verdicts (only the rows it really inserted count): the plant view reads this.
CREATE TABLE IF NOT EXISTS hourly (
    station text NOT NULL DEFAULT current_user,
    product text NOT NULL,
    hour    timestamptz NOT NULL,
    ok      bigint NOT NULL DEFAULT 0,
    ng      bigint NOT NULL DEFAULT 0,
    error   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (station, product, hour)
);
CREATE INDEX IF NOT EXISTS hourly_hour ON hourly (hour);

CREATE TABLE IF NOT EXISTS events (
    station  text NOT NULL DEFAULT current_user,
    local_id bigint NOT NULL,
    product  text NOT NULL,
    kind     text NOT NULL,
    old      text,
    new      text,
    detail   text,
    "user"   text NOT NULL,
    time     timestamptz NOT NULL,
    received timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station, local_id)
);

-- Each station's last report: when (server time), how far behind, its clock's offset.
CREATE TABLE IF NOT EXISTS stations (
    station      text PRIMARY KEY DEFAULT current_user,
    last_seen    timestamptz NOT NULL DEFAULT now(),
    behind       bigint NOT NULL DEFAULT 0,
    clock_skew_s double precision
);

-- The model version each station runs for each product (its latest shipped verdict).
CREATE TABLE IF NOT EXISTS station_products (
    station       text NOT NULL DEFAULT current_user,
    product       text NOT NULL,
    model_version integer,
    model_id      text,
    last_local_id bigint NOT NULL,
    last_time     timestamptz NOT NULL,
    PRIMARY KEY (station, product)
);

-- Published model versions: the files of a station's version, their checksum, who and when.
CREATE TABLE IF NOT EXISTS models (
    product       text NOT NULL,
    version       integer NOT NULL CHECK (version > 0),
    model_json    bytea NOT NULL,
    memory_bank   bytea NOT NULL,
    sha256        text NOT NULL,
    model_id      text NOT NULL,
    station       text,
    local_version integer,
    change        text,
    published_by  text NOT NULL DEFAULT current_user,
    published_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product, version)
);

-- A month's partition of results (rows of that month already in the default partition move into it).
CREATE OR REPLACE FUNCTION inspector_month_partition(month date) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    first date := date_trunc('month', month);
    name  text := format('results_%s', to_char(first, 'YYYY_MM'));
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE results INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    EXECUTE format('WITH moved AS (DELETE FROM results_default WHERE time >= %L AND time < %L RETURNING *) '
                   'INSERT INTO %I SELECT * FROM moved', first::timestamptz, (first + interval '1 month')::timestamptz, name);
    EXECUTE format('ALTER TABLE results ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   name, first::timestamptz, (first + interval '1 month')::timestamptz);
    RETURN name;
END $$;

-- The partitions from last month to a year ahead: run this monthly (cron, pg_cron).
CREATE OR REPLACE FUNCTION inspector_make_partitions() RETURNS void LANGUAGE sql AS $$
    SELECT inspector_month_partition((date_trunc('month', now()) + m * interval '1 month')::date)
    FROM generate_series(-1, 12) AS m;
$$;
SELECT inspector_make_partitions();

-- Rights and row-level security.
REVOKE ALL ON results, hourly, events, stations, station_products, models, plant_schema FROM PUBLIC;
GRANT SELECT ON plant_schema TO inspector_station, inspector_engineer;
GRANT SELECT, INSERT ON results, events TO inspector_station;
GRANT SELECT, INSERT, UPDATE ON hourly, stations, station_products TO inspector_station;
GRANT SELECT ON models TO inspector_station;
GRANT SELECT ON results, hourly, events, stations, station_products TO inspector_engineer;
GRANT SELECT, INSERT ON models TO inspector_engineer;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['results', 'hourly', 'events', 'stations', 'station_products'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        IF NOT EXISTS (SELECT FROM pg_policies WHERE tablename = t AND policyname = 'own_rows') THEN
            EXECUTE format('CREATE POLICY own_rows ON %I TO inspector_station '
                           'USING (station = current_user) WITH CHECK (station = current_user)', t);
        END IF;
        IF NOT EXISTS (SELECT FROM pg_policies WHERE tablename = t AND policyname = 'engineers_read') THEN
            EXECUTE format('CREATE POLICY engineers_read ON %I FOR SELECT TO inspector_engineer USING (true)', t);
        END IF;
    END LOOP;
END $$;

-- Done: this is schema version 1 (a database of an older version is upgraded by the steps above).
UPDATE plant_schema SET version = 1 WHERE version < 1;
