import importlib

from tortoise import migrations
from tortoise.migrations import operations as ops

_0002 = importlib.import_module("api.migrations.0002_case_intake")

# The ratings' locks are transaction-level advisory locks, one per citizen and one per officer:
# they make the ratings of one citizen, and those of one officer, take turns exactly as the row
# locks of 0002 did, without writing a lock into the row (no page dirtied, no WAL record) for
# each rating. Lock order: citizens, then officers, each by id, as before. The two keys:
CITIZEN_LOCK = 1348009985  # 0x50590001
OFFICER_LOCK = 1348009986  # 0x50590002

# A rating a reviewer decided on (confirmed or cleared) keeps its flags. Said so, the flagging
# update finds the burst's ratings through the officer's or the citizen's index: the flag-status
# index, which holds every rating, is no way to them.
_UNDECIDED = ("AND e.flag_status IN ('', 'pending')", "AND e.flag_status NOT IN ('confirmed', 'cleared')")
assert _0002.RATE_CORE_FUNCTION.count(_UNDECIDED[0]) == 2
RATE_CORE_FUNCTION = _0002.RATE_CORE_FUNCTION.replace(*_UNDECIDED)

RATE_FUNCTION = (
    "\nCREATE OR REPLACE FUNCTION pingyi_rate("
    + _0002.RATE_SIGNATURE
    + f"""LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock({CITIZEN_LOCK}, p_citizen);
    PERFORM pg_advisory_xact_lock({OFFICER_LOCK}, k.officer_id) FROM card k WHERE k.code = p_code;
    SELECT * INTO outcome, rating_id, card_ref, officer_ref, last_rated_at FROM pingyi_rate_core(
        p_code, p_citizen, p_level, p_dimensions, p_answers, p_comment, p_verified, p_now,
        p_window_since, p_ticket, p_sla_profile, p_officer_since, p_officer_threshold,
        p_officer_minutes,
        p_citizen_since, p_citizen_threshold, p_citizen_minutes);
END
$fn$
""")


def _reason(rule: str, count: str) -> str:
    """A burst flag's reason (``officer`` or ``citizen``), as pingyi_rate_core writes it."""
    return (
        f"jsonb_build_object('code', '{rule}_burst', 'count', {count}, "
        f"'minutes', p_{rule}_minutes, 'threshold', p_{rule}_threshold)"
    )


def _flag_earlier(rule: str, whose: str) -> str:
    """Flags the earlier ratings of the burst rating ``r`` completed (``whose``: the officer's or
    the citizen's), those not flagged for the rule yet and not decided by a reviewer."""
    return f"""UPDATE evaluation e
            SET flag_reasons = e.flag_reasons || jsonb_build_array({_reason(rule, f"r.{rule}_n")}),
                flagged = TRUE, flag_status = 'pending', flagged_at = COALESCE(e.flagged_at, r.now)
            WHERE {whose} AND e.created_at > r.{rule}_since AND e.id <> r.id
              AND e.flag_status NOT IN ('confirmed', 'cleared')
              AND NOT e.flag_reasons @> '[{{"code": "{rule}_burst"}}]';"""


# Several ratings in one call, set-based. Every lock first (citizens, then officers, each by id).
# Then one statement, with a snapshot taken after the locks, checks and stores every rating that
# shares no citizen, no officer and no ticket number with an earlier rating of the call: those
# are independent of each other, so checking them together sees what checking them one after
# the other would. The few that do share one are then stored one by one in call order through
# pingyi_rate_core, each statement seeing the ratings stored before it. The earlier ratings of a
# burst are flagged when a rating brings its count to the threshold, as in pingyi_rate_core.
# A rating whose citizen the caller has not read yet comes with its session's token hash instead
# (p_citizens NULL, p_sessions the hash): the call reads the session, so the rating costs one
# round trip, and tells whose it is (to be remembered) or 'token_invalid' (an unknown, revoked
# or expired session: nothing stored). Answers in call order.
# Both functions plan their statements for each call (plan_cache_mode), with the call's values and
# the tables' sizes as they are then. A plan kept from an early call, made while the evaluation
# table was small or its statistics stale, counted a burst by scanning every recent rating through
# the created_at index, for each rating of every later call; planned afresh, the counts take the
# citizen's and the officer's own indexes.
RATE_MANY_FUNCTION = f"""
DROP FUNCTION IF EXISTS pingyi_rate_many(text[], integer[], smallint[], text[], text[], text[],
    boolean[], timestamptz[], timestamptz[], text[], text, timestamptz[], integer,
    double precision, timestamptz[], integer, double precision);
CREATE OR REPLACE FUNCTION pingyi_rate_many(
    p_sessions text[], p_codes text[], p_citizens integer[], p_levels smallint[],
    p_dimensions text[],
    p_answers text[], p_comments text[], p_verified boolean[], p_now timestamptz[],
    p_window_since timestamptz[], p_tickets text[], p_sla_profile text,
    p_officer_since timestamptz[], p_officer_threshold integer, p_officer_minutes double precision,
    p_citizen_since timestamptz[], p_citizen_threshold integer, p_citizen_minutes double precision)
RETURNS TABLE (outcome text, rating_id integer, card_ref integer, officer_ref integer,
               last_rated_at timestamptz, citizen_ref integer, citizen_openid text,
               session_expires_at timestamptz)
LANGUAGE plpgsql SET plan_cache_mode = force_custom_plan AS $fn$
DECLARE
    n constant integer := coalesce(cardinality(p_codes), 0);
    r record;
    v_outcome text[] := array_fill(NULL::text, ARRAY[n]);
    v_rating integer[] := array_fill(NULL::integer, ARRAY[n]);
    v_card integer[] := array_fill(NULL::integer, ARRAY[n]);
    v_officer integer[] := array_fill(NULL::integer, ARRAY[n]);
    v_last timestamptz[] := array_fill(NULL::timestamptz, ARRAY[n]);
    v_later integer[] := '{{}}';
    v_openids text[] := array_fill(NULL::text, ARRAY[n]);
    v_expires timestamptz[] := array_fill(NULL::timestamptz, ARRAY[n]);
    i integer;
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(p_sessions) t WHERE t IS NOT NULL) THEN
        SELECT array_agg(coalesce(u.citizen, s.citizen_id) ORDER BY u.ord),
               array_agg(s.openid ORDER BY u.ord), array_agg(s.expires_at ORDER BY u.ord)
        INTO p_citizens, v_openids, v_expires
        FROM unnest(p_citizens, p_sessions, p_now) WITH ORDINALITY AS u(citizen, token, now, ord)
        LEFT JOIN LATERAL (  -- one index lookup each, whatever the statistics say (LIMIT 1)
            SELECT a.citizen_id, a.expires_at, z.openid
            FROM auth_session a JOIN citizen z ON z.id = a.citizen_id
            WHERE u.citizen IS NULL AND a.token_hash = u.token AND a.kind = 'citizen'
              AND a.revoked_at IS NULL AND a.expires_at > u.now
            LIMIT 1) s ON TRUE;
    END IF;
    PERFORM pg_advisory_xact_lock({CITIZEN_LOCK}, x.id)
    FROM (SELECT DISTINCT unnest(p_citizens) AS id) x ORDER BY x.id;
    PERFORM pg_advisory_xact_lock({OFFICER_LOCK}, x.id)
    FROM (SELECT DISTINCT k.officer_id AS id FROM unnest(p_codes) AS c(code)
          CROSS JOIN LATERAL (SELECT k.officer_id FROM card k WHERE k.code = c.code LIMIT 1) k) x
    ORDER BY x.id;
    FOR r IN
    WITH given AS (
        SELECT g.*, k.id AS card_id, k.officer_id, k.revoked_at,
               row_number() OVER (PARTITION BY coalesce(g.citizen, -g.ord) ORDER BY g.ord) = 1
               AND row_number() OVER (PARTITION BY coalesce(k.officer_id, -g.ord) ORDER BY g.ord) = 1
               AND row_number() OVER (PARTITION BY coalesce(g.ticket, g.ord::text) ORDER BY g.ord) = 1
               AS alone
        FROM unnest(p_codes, p_citizens, p_levels, p_dimensions, p_answers, p_comments,
                    p_verified, p_now, p_window_since, p_tickets, p_officer_since, p_citizen_since)
             WITH ORDINALITY AS g(code, citizen, level, dimensions, answers, comment, verified,
                                  now, window_since, ticket, officer_since, citizen_since, ord)
        LEFT JOIN LATERAL (SELECT * FROM card k WHERE k.code = g.code LIMIT 1) k ON TRUE
    ), checked AS (
        SELECT g.*, w.last, o.n + 1 AS officer_n,
               c.n + CASE WHEN coalesce(c.known, FALSE) THEN 0 ELSE 1 END AS citizen_n,
               coalesce(c.known, FALSE) AS known,
               CASE WHEN g.ticket IS NOT NULL
                         AND (EXISTS (SELECT 1 FROM "case" x WHERE x.ticket_no = g.ticket)
                              OR EXISTS (SELECT 1 FROM case_intake x WHERE x.ticket_no = g.ticket))
                    THEN 'ticket_taken'
                    WHEN g.card_id IS NULL THEN 'card_not_found'
                    WHEN g.revoked_at IS NOT NULL THEN 'card_revoked'
                    WHEN w.last IS NOT NULL THEN 'already_rated'
                    ELSE 'stored' END AS result
        FROM given g
        LEFT JOIN LATERAL (
            SELECT max(e.created_at) AS last FROM evaluation e
            WHERE e.citizen_id = g.citizen AND e.card_id = g.card_id
              AND e.created_at > g.window_since) w ON TRUE
        LEFT JOIN LATERAL (
            SELECT count(*) AS n FROM evaluation e
            WHERE p_officer_threshold > 0 AND e.officer_id = g.officer_id
              AND e.created_at > g.officer_since) o ON TRUE
        LEFT JOIN LATERAL (
            SELECT count(DISTINCT e.officer_id) AS n, bool_or(e.officer_id = g.officer_id) AS known
            FROM evaluation e
            WHERE p_citizen_threshold > 0 AND e.citizen_id = g.citizen
              AND e.created_at > g.citizen_since) c ON TRUE
        WHERE g.alone AND g.citizen IS NOT NULL
    ), flagged AS (
        SELECT c.*,
               CASE WHEN p_officer_threshold > 0 AND c.officer_n >= p_officer_threshold
                    THEN jsonb_build_array({_reason("officer", "c.officer_n")})
                    ELSE '[]'::jsonb END
               || CASE WHEN p_citizen_threshold > 0 AND c.citizen_n >= p_citizen_threshold
                    THEN jsonb_build_array({_reason("citizen", "c.citizen_n")})
                    ELSE '[]'::jsonb END AS reasons
        FROM checked c
    ), stored AS (
        INSERT INTO evaluation (card_id, officer_id, citizen_id, level, dimensions, answers,
                                comment, content_status, verified, flagged, flag_reasons,
                                flag_status, flagged_at, created_at)
        SELECT f.card_id, f.officer_id, f.citizen, f.level, f.dimensions::jsonb, f.answers::jsonb,
               f.comment, 'ok', f.verified, f.reasons <> '[]', f.reasons,
               CASE WHEN f.reasons <> '[]' THEN 'pending' ELSE '' END,
               CASE WHEN f.reasons <> '[]' THEN f.now END, f.now
        FROM flagged f WHERE f.result = 'stored' ORDER BY f.ord
        RETURNING id, citizen_id
    ), intake AS (
        INSERT INTO case_intake (evaluation_id, ticket_no, received_at, sla_profile,
                                 from_public_supervisor)
        SELECT s.id, f.ticket, f.now, p_sla_profile, z.is_public_supervisor
        FROM stored s
        JOIN flagged f ON f.citizen = s.citizen_id
        JOIN citizen z ON z.id = f.citizen
        WHERE f.ticket IS NOT NULL
    )
    SELECT g.ord, g.alone, f.result, s.id, g.card_id, g.officer_id, f.last, f.officer_n,
           f.citizen_n, f.known, g.officer_since, g.citizen_since, g.now, g.citizen
    FROM given g
    LEFT JOIN flagged f ON f.ord = g.ord
    LEFT JOIN stored s ON s.citizen_id = f.citizen AND f.result = 'stored'
    LOOP
        IF r.citizen IS NULL THEN
            v_outcome[r.ord] := 'token_invalid';
            CONTINUE;
        END IF;
        IF NOT r.alone THEN
            v_later := v_later || r.ord::integer;
            CONTINUE;
        END IF;
        v_outcome[r.ord] := r.result;
        v_rating[r.ord] := r.id;
        IF r.result NOT IN ('card_not_found', 'ticket_taken') THEN  -- as pingyi_rate_core tells
            v_card[r.ord] := r.card_id;
            v_officer[r.ord] := r.officer_id;
            v_last[r.ord] := r.last;
        END IF;
        IF r.result = 'stored' AND p_officer_threshold > 0
           AND r.officer_n = p_officer_threshold THEN
            {_flag_earlier("officer", "e.officer_id = r.officer_id")}
        END IF;
        IF r.result = 'stored' AND p_citizen_threshold > 0
           AND r.citizen_n = p_citizen_threshold AND NOT r.known THEN
            {_flag_earlier("citizen", "e.citizen_id = r.citizen")}
        END IF;
    END LOOP;
    FOR i IN SELECT x FROM unnest(v_later) x ORDER BY x LOOP
        SELECT * INTO r FROM pingyi_rate_core(
            p_codes[i], p_citizens[i], p_levels[i], p_dimensions[i]::jsonb, p_answers[i]::jsonb,
            p_comments[i], p_verified[i], p_now[i], p_window_since[i], p_tickets[i],
            p_sla_profile, p_officer_since[i], p_officer_threshold, p_officer_minutes,
            p_citizen_since[i], p_citizen_threshold, p_citizen_minutes);
        v_outcome[i] := r.outcome;
        v_rating[i] := r.rating_id;
        v_card[i] := r.card_ref;
        v_officer[i] := r.officer_ref;
        v_last[i] := r.last_rated_at;
    END LOOP;
    RETURN QUERY SELECT * FROM unnest(v_outcome, v_rating, v_card, v_officer, v_last, p_citizens,
                                      v_openids, v_expires);
END
$fn$
"""


async def create_functions(apps, schema_editor):
    if schema_editor.client.capabilities.dialect == "postgres":
        for function in (RATE_CORE_FUNCTION, RATE_FUNCTION, RATE_MANY_FUNCTION):
            await schema_editor.client.execute_script(function)


async def restore_functions(apps, schema_editor):
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor.client.execute_script("DROP FUNCTION IF EXISTS pingyi_rate_many")
        for function in (_0002.RATE_CORE_FUNCTION, _0002.RATE_FUNCTION, _0002.RATE_MANY_FUNCTION):
            await schema_editor.client.execute_script(function)


class Migration(migrations.Migration):
    dependencies = [('models', '0002_case_intake')]

    initial = False

    operations = [
        ops.RunPython(create_functions, restore_functions),
    ]
