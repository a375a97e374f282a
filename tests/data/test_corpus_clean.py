"""Markup to plain text: Brown corpus word/tag tokens and GCIDE dictd entries, on small inline samples."""

from mta.data.corpus.clean import brown_document, brown_sentence, gcide_entry, normalize


def test_normalize():
    assert normalize("\ufeff\r\nline one  \r\nline two\t\r\n\r\n") == "line one\nline two"


def test_brown_sentence_strips_tags_and_attaches_punctuation():
    line = ("\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd ``/`` no/at evidence/nn ''/'' "
            "(/( 1-1/2/cd miles/nns )/) ,/, Atlanta's/np$ ;/. and/cc he/pps didn't/dod* --/-- sir/nn !/.")
    assert brown_sentence(line) == ('The Fulton County Grand Jury said "no evidence" (1-1/2 miles), Atlanta\'s; '
                                    "and he didn't -- sir!")


def test_brown_document_is_a_sentence_a_line_and_rejoins_semicolon_cuts():
    tagged = ("\n\n\tHe/pps thought/vbd of/in Ann/np ;/. ;/.\n\n\n\teach/dt day/nn the/at hurt/nn was/bedz "
              "duller/jjr ./.\n\n\n\tHe/pps worked/vbd ./.\n")
    assert brown_document(tagged) == "He thought of Ann; each day the hurt was duller.\nHe worked."


ENTRY = """Affect \\Af*fect"\\ ([a^]f*f[e^]kt"), v. t. [imp. & p. p. {Affected}; p. pr. & vb.
   n. {Affecting}.] [L. affectus, fr. AS. [=a]f?ran. See {Fact}.]
   1. To act upon; to produce an effect upon. (Chem.) [Obs.]
      [1913 Webster]

            As might affect the earth with cold heat. --Milton.
      [1913 Webster + PJC]

   2. (Alg.) Raised to the [root] of [alpha] (? or ?); [ae]ther. -- Af*fect"ed*ly, adv.
      [Webster 1913 Suppl.] Affectation
"""


def test_gcide_entry_drops_markup_and_keeps_the_text():
    assert gcide_entry(ENTRY) == (
        "Affect, v. t. [imp. & p. p. Affected; p. pr. & vb.\n"
        "n. Affecting.] [L. affectus, fr. AS. af?ran. See Fact.]\n"
        "1. To act upon; to produce an effect upon. (Chem.) [Obs.]\n"
        "\n"
        "As might affect the earth with cold heat. --Milton.\n"
        "\n"
        "2. (Alg.) Raised to the √ of α; æther. -- Affectedly, adv."
    )


def test_gcide_entry_keeps_bracketed_words_that_are_not_escapes():
    assert gcide_entry("Foo \\Foo\\, n. [R.] [He] said; see (a) and (b).\n   [WordNet 1.5]\n") == (
        "Foo, n. [R.] [He] said; see (a) and (b).")
