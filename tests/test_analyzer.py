from kb.index.analyzer import analyze, analyze_query, fold


def test_fold_stem_and_stop_words():
    assert fold("Crème Brûlée STRASSE") == "creme brulee strasse"
    assert analyze("The runners were running to the cafés") == ["runner", "were", "run", "cafe"]


def test_chinese_is_segmented():
    terms = analyze("万里长城很长")
    assert "长城" in terms and "万里长城" in terms


def test_query_terms_found_by_vocabulary_match_jieba_search_mode():
    doc_terms = set(analyze("西湖龙井茶是中国著名的绿茶，产于浙江省杭州市西湖一带。"))

    def known(ts):
        return [t for t in ts if t in doc_terms]

    for query in ("龙井茶", "杭州 绿茶", "浙江省"):
        expected = {t for t in analyze(query) if t in doc_terms}
        assert set(analyze_query(query, known)[0]) == expected, query


def test_query_keeps_only_known_terms_and_dedups():
    assert analyze_query("running runs RUN zebra", lambda ts: [t for t in ts if t == "run"]) == (["run"], 1)
