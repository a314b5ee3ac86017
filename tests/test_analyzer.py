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


def test_ascii_fast_path_agrees_with_the_general_path():
    import random
    import unicodedata

    from kb.index import analyzer

    def slow_fold(text):
        decomposed = unicodedata.normalize("NFKD", text.casefold())
        return "".join(c for c in decomposed if not unicodedata.combining(c))

    rng = random.Random(7)
    alphabet = "abcXYZ_019 .,;:-'\"\n\tThe tHE of Running runs éßÅñ中文"
    for n in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        if n % 2:
            text = text.encode("ascii", "ignore").decode()
        assert fold(text) == slow_fold(text), text
        words = [m.group() for m in analyzer._TOKEN.finditer(slow_fold(text))]
        if text.isascii():
            expected = [w for w in words if w not in analyzer.STOP_WORDS]
            assert analyze(text) == (analyzer._stemmer().stemWords(expected) if expected else []), text
