from kb.index.analyzer import analyze, analyze_query, chunk_terms, fold, identifiers


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
            stems = analyzer._stemmer().stemWords(expected) if expected else []
            assert analyze(text) == stems + analyzer.identifiers(text), text


def test_identifiers_are_terms_of_their_own_beside_their_words():
    assert analyze("Set CMAKE_BUILD_TYPE to Release") == ["set", "cmake", "build", "type", "releas", "cmake_build_type"]
    assert identifiers("use os.path.join, std::vector, C++ and C# (e.g. here)") == [
        "os.path.join", "std::vector", "c++", "c#"]
    assert identifiers("SentenceTransformer and __init__") == ["sentenc", "transform"]
    assert identifiers("Plain prose, nothing joined. Version 3.14 of a_b.") == []


def test_a_query_naming_an_identifier_looks_for_it_whole():
    index = set(analyze("CMAKE_BUILD_TYPE selects the build type; C++ and C are languages"))
    terms, missing = analyze_query("What does CMAKE_BUILD_TYPE do in C++?", lambda ts: [t for t in ts if t in index])
    assert "cmake_build_type" in terms and "c++" in terms and missing == 3  # what, does, do


def test_a_chunk_keeps_its_file_name_and_heading_as_a_field_of_their_own():
    text, title = chunk_terms("Body text.", "CMAKE_BUILD_TYPE", "Console > print")
    assert text == ["bodi", "text"]
    assert title.count("cmake_build_type") == 1 and title.count("console.print") == 1 and title.count("print") == 2
