from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

# The parameters of one rating and what is told of it: the same for the core and its caller.
RATE_SIGNATURE = """
    p_code text, p_citizen integer, p_level smallint, p_dimensions jsonb, p_answers jsonb,
    p_comment text, p_verified boolean, p_now timestamptz, p_window_since timestamptz,
    p_ticket text, p_sla_profile text,
    p_officer_since timestamptz, p_officer_threshold integer, p_officer_minutes double precision,
    p_citizen_since timestamptz, p_citizen_threshold integer, p_citizen_minutes double precision,
    OUT outcome text, OUT rating_id integer, OUT card_ref integer, OUT officer_ref integer,
    OUT last_rated_at timestamptz)
"""

# The rating itself, on PostgreSQL (api/services/rating_store.py, api/services/rating_batch.py).
# pingyi_rate_core stores one rating whose citizen and officer rows the transaction has locked
# already: one statement reads the card, the citizen's last rating of it within the window and
# both burst counts, one more inserts (a 差评 adds its intake row). Each statement of a plpgsql
# function takes a new snapshot, so after the locks the window check sees a simultaneous tap's
# committed rating and the counts see every rating of the officer before it. A rating of a burst
# is stored flagged; the earlier ratings of the burst are flagged once, when the count reaches
# the threshold (each later rating of the burst comes flagged itself).
RATE_CORE_FUNCTION = (
    "\nCREATE OR REPLACE FUNCTION pingyi_rate_core("
    + RATE_SIGNATURE
    + """LANGUAGE plpgsql AS $fn$
DECLARE
    v_revoked timestamptz;
    v_officer bigint;
    v_citizen bigint;
    v_known boolean;
    v_reasons jsonb := '[]';
BEGIN
    IF p_ticket IS NOT NULL AND (EXISTS (SELECT 1 FROM "case" WHERE ticket_no = p_ticket)
                                 OR EXISTS (SELECT 1 FROM case_intake WHERE ticket_no = p_ticket))
    THEN
        outcome := 'ticket_taken';
        RETURN;
    END IF;
    SELECT k.id, k.officer_id, k.revoked_at, w.last, o.n + 1,
           c.n + CASE WHEN coalesce(c.known, FALSE) THEN 0 ELSE 1 END, coalesce(c.known, FALSE)
    INTO card_ref, officer_ref, v_revoked, last_rated_at, v_officer, v_citizen, v_known
    FROM card k
    CROSS JOIN LATERAL (
        SELECT max(e.created_at) AS last FROM evaluation e
        WHERE e.citizen_id = p_citizen AND e.card_id = k.id AND e.created_at > p_window_since) w
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM evaluation e
        WHERE p_officer_threshold > 0 AND e.officer_id = k.officer_id
          AND e.created_at > p_officer_since) o
    CROSS JOIN LATERAL (
        SELECT count(DISTINCT e.officer_id) AS n, bool_or(e.officer_id = k.officer_id) AS known
        FROM evaluation e
        WHERE p_citizen_threshold > 0 AND e.citizen_id = p_citizen
          AND e.created_at > p_citizen_since) c
    WHERE k.code = p_code;
    IF NOT FOUND THEN
        outcome := 'card_not_found';
        RETURN;
    END IF;
    IF v_revoked IS NOT NULL THEN
        outcome := 'card_revoked';
        RETURN;
    END IF;
    IF last_rated_at IS NOT NULL THEN
        outcome := 'already_rated';
        RETURN;
    END IF;
    IF p_officer_threshold > 0 AND v_officer >= p_officer_threshold THEN
        v_reasons := v_reasons || jsonb_build_array(jsonb_build_object(
            'code', 'officer_burst', 'count', v_officer, 'minutes', p_officer_minutes,
            'threshold', p_officer_threshold));
    END IF;
    IF p_citizen_threshold > 0 AND v_citizen >= p_citizen_threshold THEN
        v_reasons := v_reasons || jsonb_build_array(jsonb_build_object(
            'code', 'citizen_burst', 'count', v_citizen, 'minutes', p_citizen_minutes,
            'threshold', p_citizen_threshold));
    END IF;
    INSERT INTO evaluation (card_id, officer_id, citizen_id, level, dimensions, answers, comment,
                            content_status, verified, flagged, flag_reasons, flag_status,
                            flagged_at, created_at)
    VALUES (card_ref, officer_ref, p_citizen, p_level, p_dimensions, p_answers, p_comment, 'ok',
            p_verified, v_reasons <> '[]', v_reasons,
            CASE WHEN v_reasons <> '[]' THEN 'pending' ELSE '' END,
            CASE WHEN v_reasons <> '[]' THEN p_now END, p_now)
    RETURNING id INTO rating_id;
    IF p_ticket IS NOT NULL THEN
        INSERT INTO case_intake (evaluation_id, ticket_no, received_at, sla_profile,
                                 from_public_supervisor)
        VALUES (rating_id, p_ticket, p_now, p_sla_profile,
                (SELECT c.is_public_supervisor FROM citizen c WHERE c.id = p_citizen));
    END IF;
    IF p_officer_threshold > 0 AND v_officer = p_officer_threshold THEN
        UPDATE evaluation e
        SET flag_reasons = e.flag_reasons || jsonb_build_array(jsonb_build_object(
                'code', 'officer_burst', 'count', v_officer, 'minutes', p_officer_minutes,
                'threshold', p_officer_threshold)),
            flagged = TRUE, flag_status = 'pending', flagged_at = COALESCE(e.flagged_at, p_now)
        WHERE e.officer_id = officer_ref AND e.created_at > p_officer_since AND e.id <> rating_id
          AND e.flag_status IN ('', 'pending')
          AND NOT e.flag_reasons @> '[{"code": "officer_burst"}]';
    END IF;
    IF p_citizen_threshold > 0 AND v_citizen = p_citizen_threshold AND NOT v_known THEN
        UPDATE evaluation e
        SET flag_reasons = e.flag_reasons || jsonb_build_array(jsonb_build_object(
                'code', 'citizen_burst', 'count', v_citizen, 'minutes', p_citizen_minutes,
                'threshold', p_citizen_threshold)),
            flagged = TRUE, flag_status = 'pending', flagged_at = COALESCE(e.flagged_at, p_now)
        WHERE e.citizen_id = p_citizen AND e.created_at > p_citizen_since AND e.id <> rating_id
          AND e.flag_status IN ('', 'pending')
          AND NOT e.flag_reasons @> '[{"code": "citizen_burst"}]';
    END IF;
    outcome := 'stored';
END
$fn$
""")

# One rating (with an encounter code or a held comment, in the caller's transaction): the
# citizen's row lock, then the officer's (lock order citizen, then officer, as everywhere).
RATE_FUNCTION = (
    "\nCREATE OR REPLACE FUNCTION pingyi_rate("
    + RATE_SIGNATURE
    + """LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM citizen WHERE id = p_citizen FOR UPDATE;
    PERFORM 1 FROM officer WHERE id = (SELECT k.officer_id FROM card k WHERE k.code = p_code)
    FOR NO KEY UPDATE;
    SELECT * INTO outcome, rating_id, card_ref, officer_ref, last_rated_at FROM pingyi_rate_core(
        p_code, p_citizen, p_level, p_dimensions, p_answers, p_comment, p_verified, p_now,
        p_window_since, p_ticket, p_sla_profile, p_officer_since, p_officer_threshold,
        p_officer_minutes,
        p_citizen_since, p_citizen_threshold, p_citizen_minutes);
END
$fn$
""")

# Several ratings in one call and one transaction (api/services/rating_batch.py): every row lock
# first, in one order (citizens, then officers, each by id) so that concurrent batches and single
# ratings never wait on each other in a circle, then each rating in order (a later rating of the
# batch sees the earlier ones: the same transaction).
RATE_MANY_FUNCTION = """
CREATE OR REPLACE FUNCTION pingyi_rate_many(
    p_codes text[], p_citizens integer[], p_levels smallint[], p_dimensions text[],
    p_answers text[], p_comments text[], p_verified boolean[], p_now timestamptz[],
    p_window_since timestamptz[], p_tickets text[], p_sla_profile text,
    p_officer_since timestamptz[], p_officer_threshold integer, p_officer_minutes double precision,
    p_citizen_since timestamptz[], p_citizen_threshold integer, p_citizen_minutes double precision)
RETURNS TABLE (outcome text, rating_id integer, card_ref integer, officer_ref integer,
               last_rated_at timestamptz)
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM citizen WHERE id = ANY (p_citizens) ORDER BY id FOR UPDATE;
    PERFORM 1 FROM officer WHERE id IN (SELECT c.officer_id FROM card c WHERE c.code = ANY (p_codes))
    ORDER BY id FOR NO KEY UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_codes, 1), 0) LOOP
        RETURN QUERY SELECT * FROM pingyi_rate_core(
            p_codes[i], p_citizens[i], p_levels[i], p_dimensions[i]::jsonb, p_answers[i]::jsonb,
            p_comments[i], p_verified[i], p_now[i], p_window_since[i], p_tickets[i],
            p_sla_profile, p_officer_since[i], p_officer_threshold, p_officer_minutes,
            p_citizen_since[i], p_citizen_threshold, p_citizen_minutes);
    END LOOP;
END
$fn$
"""


async def create_rate_function(apps, schema_editor):
    if schema_editor.client.capabilities.dialect == "postgres":
        for function in (RATE_CORE_FUNCTION, RATE_FUNCTION, RATE_MANY_FUNCTION):
            await schema_editor.client.execute_script(function)


async def drop_rate_function(apps, schema_editor):
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor.client.execute_script("DROP FUNCTION IF EXISTS pingyi_rate_many")
        await schema_editor.client.execute_script("DROP FUNCTION IF EXISTS pingyi_rate")
        await schema_editor.client.execute_script("DROP FUNCTION IF EXISTS pingyi_rate_core")


class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='CaseIntake',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('evaluation', fields.OneToOneField('models.Evaluation', source_field='evaluation_id', db_constraint=True, to_field='id', related_name='intake', on_delete=OnDelete.CASCADE)),
                ('ticket_no', fields.CharField(unique=True, max_length=20)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('sla_profile', fields.CharField(max_length=40)),
                ('from_public_supervisor', fields.BooleanField(default=False)),
            ],
            options={'table': 'case_intake', 'app': 'models', 'pk_attr': 'id', 'table_description': "A 差评 whose follow-up case is still to be opened (written in the rating's transaction)."},
            bases=['Model'],
        ),
        ops.RunPython(create_rate_function, drop_rate_function),
    ]
