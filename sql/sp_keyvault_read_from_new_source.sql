/*
id = "sp_keyvault_read_from_new_source"
name = "Workload identity reads Key Vault secrets, keys or certificates from a new address"
description = """
A managed identity or service principal (the object id in the token Key Vault logs) read secrets,
keys or certificates of a vault from an address it never used for that vault in the last 10 days.
Seed 002 correlates a VM's managed identity with the vault's AuditEvent log by the token's object-id
claim; a stolen token or credential used from elsewhere shows up as a new address for the vault."""
type = "new_terms"
severity = "medium"
risk_score = 47
interval = "1h"
lookback = "1h"
history_window = "10d"
new_terms_fields = ["caller_object_id", "vault", "caller_ip"]
requires = ["asn"]  # severity high needs the addresses' ASNs
tables = ["resource_logs"]
alert_key = ["caller_object_id", "vault", "caller_ip", "ts"]
false_positives = ["A workload moved to a new host, subnet or region; a new private endpoint for the vault."]
references = ["https://learn.microsoft.com/en-us/azure/key-vault/general/logging"]
note = """
High when the address's ASN is new too for that principal and vault. Reads: SecretGet, SecretList,
SecretListVersions, SecretBackup, KeyGet, KeyList, KeyListVersions, KeyDecrypt, KeyUnwrap, KeySign,
KeyBackup, CertificateGet, CertificateList, CertificateListVersions, CertificateBackup; failed
requests (HTTP 4xx/5xx) count too (a probe with a stolen token fails as often as it succeeds).
An address that comes back after more than 10 days unused is new again and alerts again (the
alert key holds the first read's time). Triage: pivot on the principal (wisp pivot sp <object id>): its sign-ins around the read, from
which address, and what else the token touched."""

[mitre]
tactics = ["TA0006 Credential Access"]
techniques = ["T1555.006 Credentials from Password Stores: Cloud Secrets Management Stores"]
*/
-- A (caller, vault, address) is new when it has a read in the window and none in
-- [$history_start, $window_start]; its ASN is new when the caller read the vault from no address
-- of that ASN in that range either. The history comes from the rollup `sp_keyvault_read_rollup`
-- (src/rollups.rs; its source is exactly these reads, its keys the caller, vault, address and
-- ASN), so the ten days of reads are not read; only the window's reads are, through the
-- rollup's source `sp_keyvault_read_rollup_events` (one definition of a read for both).
WITH history AS (
    -- The keys with a read in [$history_start, $window_start]. A row has a read in the range
    -- when its first is at or before the range's end and its last at or after its start — exact
    -- for a row inside the range and for one reaching past a single end of it. So: when the
    -- range spans a midnight, the 'day' rows of every day it touches (the first day ends before
    -- the range does and the last begins after it starts: no day row reaches past both ends);
    -- within one day, that day's 'hour' rows (one reaches past both ends only in a range shorter
    -- than an hour, which reads the events instead); and the 'event' rows of days without a
    -- current summary. The grains are chosen by constants and bounded on `bucket` itself, so
    -- row-group statistics skip the other grain's rows: a partial day's hour rows are six times
    -- its day rows (an hour's window of medium read 56 K history rows, now 30 K).
    -- A range of seven days or more (the rule's own: ten days) reads the same way from
    -- `sp_keyvault_read_rollup_weekly`, whose 'week' rows summarize whole ISO weeks (a week row
    -- cannot reach past both ends of a range at least as long as a week) and whose other rows
    -- are the days no current week covers; a week is stored under its Monday, so the weeks
    -- touching the range are those from six days before its first day (an hour's window of
    -- medium: 2 history files instead of 12).
    -- Each key once: the 'event' rows of days without a summary (today's, in every scheduled
    -- run) repeat keys, and the lists of `known` below are built from these rows (a history
    -- joined ungrouped took 17 s for one window of medium with every day raw).
    SELECT caller_object_id, vault, caller_ip, source_asn
    FROM (
        SELECT caller_object_id, vault, caller_ip, source_asn
        FROM sp_keyvault_read_rollup_weekly
        WHERE day >= to_char($history_start - INTERVAL '6 days', '%Y-%m-%d') AND day <= to_char($window_start, '%Y-%m-%d')
          AND first_ts <= $window_start AND last_ts >= $history_start
          AND CAST($window_start AS BIGINT) - CAST($history_start AS BIGINT) >= 604800000000
          AND grain IN ('week', 'day', 'event')
        UNION ALL
        SELECT caller_object_id, vault, caller_ip, source_asn
        FROM sp_keyvault_read_rollup
        WHERE day >= to_char($history_start, '%Y-%m-%d') AND day <= to_char($window_start, '%Y-%m-%d')
          AND first_ts <= $window_start AND last_ts >= $history_start
          AND CAST($window_start AS BIGINT) - CAST($history_start AS BIGINT) >= 3600000000
          AND CAST($window_start AS BIGINT) - CAST($history_start AS BIGINT) < 604800000000
          AND ((grain = 'day' AND date_trunc('day', $history_start) < date_trunc('day', $window_start)
                AND bucket >= date_trunc('day', $history_start) AND bucket <= $window_start)
               OR (grain = 'hour' AND date_trunc('day', $history_start) = date_trunc('day', $window_start))
               OR grain = 'event')
        UNION ALL
        SELECT caller_object_id, vault, caller_ip, source_asn
        FROM sp_keyvault_read_rollup_events
        WHERE ts >= $history_start AND ts <= $window_start
          AND day >= to_char($history_start, '%Y-%m-%d') AND day <= to_char($window_start, '%Y-%m-%d')
          AND CAST($window_start AS BIGINT) - CAST($history_start AS BIGINT) < 3600000000
    ) AS h
    GROUP BY caller_object_id, vault, caller_ip, source_asn
),
window_reads AS (
    SELECT ts, id, caller_object_id, caller_app_id, caller_upn, caller_ip, source_asn, source_as_org, vault,
           resource_name, operation_name, status_code
    FROM sp_keyvault_read_rollup_events
    WHERE ts > $window_start AND ts >= $history_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
per_asn AS (
    -- The window's reads per (caller, vault, address, ASN), read once: the keys judged below and
    -- the measures reported are both taken from these rows (DataFusion plans a CTE again at each
    -- use, so judging `SELECT DISTINCT` keys of the reads and joining the reads to the verdicts
    -- scanned the window twice). Lists as `array_distinct` of a plain `array_agg` (vectorized).
    SELECT caller_object_id, vault, caller_ip, source_asn,
           min(ts) AS ts, max(caller_app_id) AS app_id, max(caller_upn) AS caller_upn,
           max(resource_name) AS vault_name, max(source_as_org) AS source_as_org, count(*) AS reads,
           array_distinct(array_agg(operation_name)) AS operations, array_distinct(array_agg(id)) AS objects,
           sum(CASE WHEN coalesce(status_code, 200) >= 400 THEN 1 ELSE 0 END) AS failed_reads
    FROM window_reads
    GROUP BY caller_object_id, vault, caller_ip, source_asn
),
known AS (
    -- The caller's history of each vault, one row per (caller, vault): its addresses and ASNs.
    SELECT caller_object_id, vault, array_distinct(array_agg(caller_ip)) AS addresses,
           array_distinct(array_agg(source_asn)) AS asns
    FROM history
    GROUP BY caller_object_id, vault
),
judged AS (
    -- Each (caller, vault, address, ASN) of the window against the caller's history of the vault
    -- (at most one row: no row is repeated): the address is known when the history has it; the
    -- ASN when it has the ASN. A null vault or ASN matches nothing, as a comparison with null is
    -- never true.
    SELECT p.*,
           coalesce(array_has(k.addresses, p.caller_ip), false) AS known_address,
           coalesce(p.source_asn IS NOT NULL AND array_has(k.asns, p.source_asn), false) AS known_asn
    FROM per_asn p
    LEFT JOIN known k ON k.caller_object_id = p.caller_object_id AND k.vault = p.vault
)
-- The new keys' reads (a null vault is a key of its own, as the grouping has it): a key whose
-- address the history has is known whatever its ASN.
SELECT min(ts) AS ts, caller_object_id, caller_object_id AS service_principal_id, max(app_id) AS app_id,
       max(caller_upn) AS caller_upn,
       vault, max(vault_name) AS vault_name, caller_ip AS source_ip, caller_ip,
       max(source_asn) AS source_asn, max(source_as_org) AS source_as_org,
       sum(reads) AS reads, array_sort(array_distinct(flatten(array_agg(operations)))) AS operations,
       array_sort(array_distinct(flatten(array_agg(objects)))) AS objects,
       sum(failed_reads) AS failed_reads,
       max(source_asn) IS NOT NULL AND NOT bool_or(known_asn) AS new_asn,
       CASE WHEN max(source_asn) IS NOT NULL AND NOT bool_or(known_asn) THEN 'high' ELSE 'medium' END AS severity
FROM judged
GROUP BY caller_object_id, vault, caller_ip
HAVING NOT bool_or(known_address)

-- @backtest
-- Every hourly run in [$range_start, $range_end] in one pass. With the look-back equal to the
-- interval (as this rule has it), a read belongs to exactly one run T: the one with
-- T-1h < ts <= T. Its (caller, vault, address) is new to run T when the key's latest read before
-- the run's first is older than T-10d (or there is none): the gap before that first read is then
-- more than 10d - 1h. The reads of a key come from the rollup `sp_keyvault_read_rollup` as spans:
-- per day one row per ASN of the address ('day' rows), or one per read ('event' rows: days
-- without a current summary). Days are apart and in time order; within a day reads are less than
-- a day apart, so only the day's first read can start a new run, and its predecessor is the
-- latest read of the days before: the greatest last time of the rows that begin before it. So
-- the new runs are the runs T of rows whose earlier rows all end before T-10d: a running maximum
-- over a few rows per key and day, not over every read. A row that is not its day's first has an
-- earlier row of that day before it, which ends after the day began, less than 10d before T: it
-- starts no run, as it must not. (Merging a day's rows first, a GROUP BY of every row, cost more
-- than the window itself. A run whose first read is a previous row's last, less than an hour
-- before this row's first, is judged from that row: the run comes once, DISTINCT.)
WITH spans AS (
    SELECT caller_object_id, vault, caller_ip, first_ts, last_ts
    FROM sp_keyvault_read_rollup
    WHERE grain IN ('day', 'event')
      AND first_ts <= $range_end AND last_ts >= $range_start - $lookback - $history
      AND day >= to_char($range_start - $lookback - $history, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
new_runs AS (
    SELECT DISTINCT caller_object_id, vault, caller_ip, run_end_us
    FROM (SELECT caller_object_id, vault, caller_ip,
                 ((CAST(first_ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS run_end_us,
                 CAST(max(last_ts) OVER (PARTITION BY caller_object_id, vault, caller_ip ORDER BY first_ts
                                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS BIGINT) AS prev_us
          FROM spans)
    WHERE (prev_us IS NULL OR prev_us < run_end_us - $history_us)
      AND run_end_us >= CAST($range_start AS BIGINT) AND run_end_us <= CAST($range_end AS BIGINT)
),
in_window AS (
    -- The new runs' reads (the rollup's source), numbered to count each once below. The vault is
    -- compared after the hash lookup, not as one of its keys: the join's filter, pushed into the
    -- scan, would compute `lower(resource_id)` for every read of the range to hash it (half of the
    -- scan's filter time over 30 days of medium), where this computes it for the reads whose
    -- caller, address and run match.
    SELECT r.*, row_number() OVER () AS read_no
    FROM (SELECT ts, id, caller_object_id, caller_app_id, caller_upn, caller_ip, source_asn, source_as_org, vault,
                 resource_name, operation_name, status_code,
                 ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS run_end_us
          FROM sp_keyvault_read_rollup_events
          WHERE ts > $range_start - $lookback AND ts <= $range_end
            AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')) r
    JOIN new_runs n
      ON r.caller_object_id = n.caller_object_id AND r.caller_ip = n.caller_ip AND r.run_end_us = n.run_end_us
     AND (r.vault = n.vault) IS TRUE
),
judged AS (
    -- The ASN is known to run T when the caller read the vault from it in [T-10d, T-1h] (an
    -- earlier run's bucket within the history): a rollup row with its first at or before T-1h and
    -- its last at or after T-10d — exact, as the range is longer than a day, so no row reaches
    -- past both of its ends. A read joined to k such rows comes k times: the aggregation counts
    -- reads by number. The rows' times are made nullable (`nullif` with a time none has): a
    -- sort-merge join (Ballista plans one) pads unmatched reads' columns with nulls before its
    -- filter, and a column declared non-nullable fails the job.
    SELECT w.*, k.source_asn AS known_asn
    FROM in_window w
    LEFT JOIN (SELECT caller_object_id, vault, source_asn, nullif(CAST(first_ts AS BIGINT), -1) AS first_us,
                      nullif(CAST(last_ts AS BIGINT), -1) AS last_us
               FROM sp_keyvault_read_rollup
               WHERE grain IN ('day', 'event') AND source_asn IS NOT NULL
                 AND first_ts <= $range_end AND last_ts >= $range_start - $lookback - $history
                 AND day >= to_char($range_start - $lookback - $history, '%Y-%m-%d')
                 AND day <= to_char($range_end, '%Y-%m-%d')) k
      ON k.caller_object_id = w.caller_object_id AND k.vault = w.vault AND k.source_asn = w.source_asn
     AND k.first_us <= w.run_end_us - $interval_us AND k.last_us >= w.run_end_us - $history_us
)
-- The lists are `array_distinct` of a plain `array_agg` (the values of the hunt's
-- `array_agg(DISTINCT …)`), so that every aggregate here has a vectorized accumulator: one
-- without makes the whole aggregation keep an accumulator object per group.
SELECT min(ts) AS ts, caller_object_id, caller_object_id AS service_principal_id, max(caller_app_id) AS app_id,
       max(caller_upn) AS caller_upn,
       vault, max(resource_name) AS vault_name, caller_ip AS source_ip, caller_ip,
       max(source_asn) AS source_asn, max(source_as_org) AS source_as_org,
       count(DISTINCT read_no) AS reads, array_sort(array_distinct(array_agg(operation_name))) AS operations,
       array_sort(array_distinct(array_agg(id))) AS objects,
       count(DISTINCT CASE WHEN coalesce(status_code, 200) >= 400 THEN read_no END) AS failed_reads,
       max(source_asn) IS NOT NULL AND max(known_asn) IS NULL AS new_asn,
       CASE WHEN max(source_asn) IS NOT NULL AND max(known_asn) IS NULL THEN 'high' ELSE 'medium' END AS severity,
       run_end_us
FROM judged
GROUP BY caller_object_id, vault, caller_ip, run_end_us
