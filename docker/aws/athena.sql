-- Athena over what `clickpipe sink s3` writes (s3.format = "parquet").
-- Replace s3://YOUR-BUCKET/predictions with s3://{s3.bucket}/{s3.prefix}, and the dead-letter
-- location with {s3.dead_letter_prefix} (default: {s3.prefix}-dead-letters).
--
-- Partitions are projected (no MSCK REPAIR, no crawler): dt is the event day (UTC), hour the
-- event hour. Columns are matched by name, so a feature set that gains features only needs the
-- new columns added here (ALTER TABLE predictions ADD COLUMNS (new_feature double)); objects
-- written before hold null for them. Numbers are double, flags boolean, text string; a feature
-- named like a fixed column is stored as feature_{name}. Athena folds column names to lower case
-- and wants letters, digits and underscores: name declared features that way (one-hot columns
-- take their values into the name, e.g. event_type_page_view).

CREATE EXTERNAL TABLE IF NOT EXISTS predictions (
  event_id                 string,
  user_id                  string,
  session_id               string,
  event_time               timestamp,
  features_version         string,
  -- The built-in features; declare yours here instead when you use features.set.
  hour_of_day              double,
  day_of_week              double,
  is_weekend               boolean,
  local_time_known         boolean,
  zip_median_income        double,
  zip_known                boolean,
  session_event_count      double,
  seconds_since_prev_event double,
  session_duration_s       double,
  event_type_page_view     double,
  event_type_product_view  double,
  event_type_search        double,
  event_type_add_to_cart   double,
  event_type_remove_from_cart double,
  event_type_checkout      double,
  event_type_purchase      double,
  event_type_other         double,
  device_mobile            double,
  device_desktop           double,
  device_tablet            double,
  device_other             double,
  score                    double,
  model_version            string,
  processed_at             timestamp,
  kafka_partition          int,
  kafka_offset             bigint
)
PARTITIONED BY (dt string, hour string)
STORED AS PARQUET
LOCATION 's3://YOUR-BUCKET/predictions/'
TBLPROPERTIES (
  'projection.enabled'        = 'true',
  'projection.dt.type'        = 'date',
  'projection.dt.format'      = 'yyyy-MM-dd',
  'projection.dt.range'       = '2024-01-01,NOW',
  'projection.dt.interval'    = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'projection.hour.type'      = 'integer',
  'projection.hour.range'     = '0,23',
  'projection.hour.digits'    = '2',
  'storage.location.template' = 's3://YOUR-BUCKET/predictions/dt=${dt}/hour=${hour}/'
);

CREATE EXTERNAL TABLE IF NOT EXISTS dead_letters (
  event_time       timestamp,
  kind             string,
  message          string,
  stage            string,
  attempts         int,
  failed_at        timestamp,
  source_topic     string,
  source_partition int,
  source_offset    bigint,
  payload          string,
  kafka_partition  int,
  kafka_offset     bigint
)
PARTITIONED BY (dt string, hour string)
STORED AS PARQUET
LOCATION 's3://YOUR-BUCKET/predictions-dead-letters/'
TBLPROPERTIES (
  'projection.enabled'        = 'true',
  'projection.dt.type'        = 'date',
  'projection.dt.format'      = 'yyyy-MM-dd',
  'projection.dt.range'       = '2024-01-01,NOW',
  'projection.dt.interval'    = '1',
  'projection.dt.interval.unit' = 'DAYS',
  'projection.hour.type'      = 'integer',
  'projection.hour.range'     = '0,23',
  'projection.hour.digits'    = '2',
  'storage.location.template' = 's3://YOUR-BUCKET/predictions-dead-letters/dt=${dt}/hour=${hour}/'
);

-- Score distribution by local hour of day (the feature the model saw), last 7 days.
SELECT hour_of_day,
       count(*)                            AS events,
       avg(score)                          AS mean_score,
       approx_percentile(score, 0.5)       AS p50_score,
       approx_percentile(score, 0.9)       AS p90_score
FROM predictions
WHERE dt >= date_format(current_date - interval '7' day, '%Y-%m-%d')
GROUP BY hour_of_day
ORDER BY hour_of_day;

-- Dead letters by kind per day.
SELECT dt, kind, count(*) AS dead_letters
FROM dead_letters
GROUP BY dt, kind
ORDER BY dt, kind;
