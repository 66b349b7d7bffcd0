from tests.support import batch, page


def test_engine_ingests_and_decides(engine):
    r = engine.ingest_batch(batch(*[page("https://b.example/mortgages/x", anon="a1")] * 2))
    assert r.accepted == 1
    assert r.duplicates == 1
