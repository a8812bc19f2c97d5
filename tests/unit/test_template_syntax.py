"""Tests for cloudburst.template (syntax, xml): the template type, text, XML and JSON forms."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudburst.errors import TemplateError, TemplateSyntaxError
from cloudburst.template import (
    Template,
    Value,
    normalize_name,
    parse,
    parse_any,
    parse_xml,
)
from seed_templates import SEED_EC2_TEMPLATE, SEED_IM_EC2_CONF, SEED_ONED_CONF_EC2

# Spec 4.1, example.
SPEC_EXAMPLE = """\
NAME   = "web server"   # comment
CPU    = 0.5
MEMORY = 512
DISK   = [ IMAGE_ID = 3 ]
EC2    = [ AMI = "ami-00bafcb5", KEYPAIR = "gsg-keypair", INSTANCETYPE = m1.small ]
"""

# Seed 003 ("Cloud Bursting Driver"), as written: no comma after the first pair.
SEED_PUBLIC_CLOUD_TEMPLATE = """\
CPU=1 MEMORY=256 PUBLIC_CLOUD=[

  TYPE=provider_name
  PROVIDER_IMAGE_ID=id-141234,
  PROVIDER_INSTANCE_TYPE=small_256mb

]
"""

# Seed 003: the deployment file the deploy script receives (wrapped in a root).
SEED_PUBLIC_CLOUD_XML = """\
<TEMPLATE>
<CPU>1</CPU>
<MEMORY>256</MEMORY>
<PUBLIC_CLOUD>
    <TYPE>provider_name</TYPE>
    <PROVIDER_IMAGE_ID>id-141234</PROVIDER_IMAGE_ID>
    <PROVIDER_INSTANCE_TYPE>small_256mb</PROVIDER_INSTANCE_TYPE>
</PUBLIC_CLOUD>
</TEMPLATE>
"""

# Seed 000: several EC2 sections, one per site.
SEED_MULTI_SITE = """\
EC2 = [ CLOUD="ec2_eu_west",
        AMI="ami-0022c769",
        AUTHORIZED_PORTS="22" ]
EC2 = [ CLOUD="ec2_eu_east",
        AMI="ami-03324cc9",
        AUTHORIZED_PORTS="22" ]
"""

# Seed 000: /etc/one/vmm_ec2/vmm_ec2.conf, its comment shortened (XML after a comment).
SEED_VMM_EC2_CONF = """\
<!--
 Default configuration attributes for the EC2 driver
 Example:
 <TEMPLATE>
   <EC2>
     <KEYPAIR>gsg-keypair</KEYPAIR>
   </EC2>
 </TEMPLATE>
-->

<TEMPLATE>
  <EC2>
    <INSTANCETYPE>m1.small</INSTANCETYPE>
  </EC2>
</TEMPLATE>
"""


# -- parsing: spec and seeds --------------------------------------------------------


def test_spec_example() -> None:
    template = parse(SPEC_EXAMPLE)
    assert list(template) == [
        ("NAME", "web server"),
        ("CPU", "0.5"),
        ("MEMORY", "512"),
        ("DISK", {"IMAGE_ID": "3"}),
        (
            "EC2",
            {"AMI": "ami-00bafcb5", "KEYPAIR": "gsg-keypair", "INSTANCETYPE": "m1.small"},
        ),
    ]


def test_seed_ec2_template() -> None:
    template = parse(SEED_EC2_TEMPLATE)
    assert template.names() == ["CPU", "MEMORY", "OS", "DISK", "NIC", "EC2"]
    assert template.get("cpu") == "0.5"
    assert template.get_vector("OS") == {
        "KERNEL": "/vmlinuz",
        "INITRD": "/initrd.img",
        "ROOT": "sda1",
    }
    assert template.get_vector("DISK") == {
        "SOURCE": "/imges/apache.img",
        "TARGET": "sda",
        "READONLY": "no",
    }
    assert template.get_vector("EC2") == {
        "AMI": "ami-00bafcb5",
        "KEYPAIR": "gsg-keypair",
        "ELASTICIP": "75.101.155.97",
        "AUTHORIZED_PORTS": "22",
        "INSTANCETYPE": "m1.small",
    }
    assert "REQUIREMENTS" not in template


def test_seed_public_cloud_template_with_missing_comma() -> None:
    template = parse(SEED_PUBLIC_CLOUD_TEMPLATE)
    assert list(template) == [
        ("CPU", "1"),
        ("MEMORY", "256"),
        (
            "PUBLIC_CLOUD",
            {
                "TYPE": "provider_name",
                "PROVIDER_IMAGE_ID": "id-141234",
                "PROVIDER_INSTANCE_TYPE": "small_256mb",
            },
        ),
    ]


def test_seed_deployment_xml_matches_the_template() -> None:
    assert parse_xml(SEED_PUBLIC_CLOUD_XML) == parse(SEED_PUBLIC_CLOUD_TEMPLATE)


def test_several_ec2_sections_are_kept_in_order() -> None:
    template = parse(SEED_MULTI_SITE)
    assert len(template) == 2
    assert [v["CLOUD"] for v in template.vectors("ec2")] == ["ec2_eu_west", "ec2_eu_east"]
    assert template.get_vector("EC2") == {
        "CLOUD": "ec2_eu_west",
        "AMI": "ami-0022c769",
        "AUTHORIZED_PORTS": "22",
    }
    assert template.get("EC2") is None


def test_im_ec2_conf_empty_values() -> None:
    template = parse(SEED_IM_EC2_CONF)
    assert list(template) == [
        ("SMALL_INSTANCES", "5"),
        ("LARGE_INSTANCES", ""),
        ("EXTRALARGE_INSTANCES", ""),
    ]


def test_oned_conf_driver_sections() -> None:
    template = parse(SEED_ONED_CONF_EC2)
    assert template.get_vector("IM_MAD") == {
        "NAME": "im_ec2",
        "EXECUTABLE": "one_im_ec2",
        "ARGUMENTS": "im_ec2/im_ec2.conf",
        "DEFAULT": "im_ec2/im_ec2.conf",
    }
    vm_mad = template.get_vector("VM_MAD")
    assert vm_mad is not None
    assert vm_mad["ARGUMENTS"] == "<ec2_configuration_options> vmm_ec2/vmm_ec2.conf"
    assert vm_mad["TYPE"] == "xml"


def test_vmm_ec2_conf_is_read_as_xml() -> None:
    template = parse_any(SEED_VMM_EC2_CONF)
    assert list(template) == [("EC2", {"INSTANCETYPE": "m1.small"})]


# -- parsing: lexical rules ------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\t\n", "# only a comment", "# a\n  # b\n"])
def test_empty_input_gives_empty_template(text: str) -> None:
    assert parse(text) == Template()
    assert len(parse(text)) == 0


def test_attributes_on_one_line() -> None:
    assert list(parse("A=1 B=2\tC = 3")) == [("A", "1"), ("B", "2"), ("C", "3")]


def test_comments_everywhere() -> None:
    text = """\
# heading
A = 1# right after an unquoted value
B = "x # not a comment" # after a quoted value
V = [ # after the bracket
  K1 = a, # after a pair
  # a whole line
  K2 = b
] # after the vector
C = # comment where the value would be
D = 4
"""
    assert list(parse(text)) == [
        ("A", "1"),
        ("B", "x # not a comment"),
        ("V", {"K1": "a", "K2": "b"}),
        ("C", ""),
        ("D", "4"),
    ]


def test_names_are_upper_cased_and_prefixed() -> None:
    template = parse("cpu=1 1st=2 _x=3 xmlrpc=4 XMl_a=5 Xm=6")
    assert template.names() == ["CPU", "ONE_1ST", "ONE__X", "ONE_XMLRPC", "ONE_XML_A", "XM"]
    assert template.get("1st") == "2"
    assert template.get("ONE_1ST") == "2"


def test_vector_keys_are_normalised_too() -> None:
    assert parse("V=[ami=1, 2x=2, xmlk=3]").get_vector("v") == {
        "AMI": "1",
        "ONE_2X": "2",
        "ONE_XMLK": "3",
    }


def test_multi_line_quoted_value_and_escaped_quotes() -> None:
    template = parse('CONTEXT_SCRIPT = "line 1\n  line \\"2\\"\nline 3"\nNEXT = 1')
    assert template.get("CONTEXT_SCRIPT") == 'line 1\n  line "2"\nline 3'
    assert template.get("NEXT") == "1"


def test_backslashes() -> None:
    template = parse(r'A = "C:\dir\new" B = "a\\b" C = "end\\" D = c:\x')
    assert template.get("A") == "C:\\dir\\new"  # other backslashes are literal
    assert template.get("B") == "a\\b"  # \\ is one backslash
    assert template.get("C") == "end\\"
    assert template.get("D") == "c:\\x"


def test_empty_values() -> None:
    template = parse('A = ""\nB =\nC =   \r\nV = [ K = "", L = ]\nE = []\nF = [  \n ]')
    assert list(template) == [
        ("A", ""),
        ("B", ""),
        ("C", ""),
        ("V", {"K": "", "L": ""}),
        ("E", {}),
        ("F", {}),
    ]


def test_empty_value_at_end_of_input() -> None:
    assert list(parse("A=1\nB =")) == [("A", "1"), ("B", "")]


def test_unquoted_value_stops_at_special_characters() -> None:
    template = parse('A=x"y B=a/b:c.d-e V=[K=v1,L=v2]')
    assert template.get("A") == 'x"y'
    assert template.get("B") == "a/b:c.d-e"
    assert template.get_vector("V") == {"K": "v1", "L": "v2"}


def test_vector_separators() -> None:
    expected = {"A": "1", "B": "2", "C": "3"}
    for text in [
        "V=[A=1,B=2,C=3]",
        "V = [ A = 1 , B = 2 , C = 3 ]",
        "V=[A=1,B=2,C=3,]",
        "V=[\n A=1,\n B=2,\n C=3,\n]",
        "V=[\n A=1\n B=2\n C=3\n]",
        "V=[A=1 B=2 C=3]",
    ]:
        assert parse(text).get_vector("V") == expected, text


def test_repeated_vector_key_first_wins() -> None:
    assert parse("V=[A=1, a=2, B=3]").get_vector("V") == {"A": "1", "B": "3"}


def test_repeated_top_level_names_are_kept() -> None:
    template = parse("A=1 A=[K=v] A=2")
    assert template.get_all("a") == ["1", {"K": "v"}, "2"]
    assert template.get("A") == "1"
    assert template.names() == ["A"]
    assert len(template) == 3


def test_windows_line_endings() -> None:
    assert list(parse("A = 1\r\nB = [ K = v\r\n ]\r\n")) == [("A", "1"), ("B", {"K": "v"})]


# -- parsing: errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [
        ("A", "syntax error, unexpected end of input, expecting '='", 1, 2),
        ("A\n= 1", "syntax error, unexpected end of line, expecting '='", 1, 2),
        ("A=1\nB=2\n  = 3", "syntax error, unexpected '=', expecting attribute name", 3, 3),
        ("A=1\nB C=2", "syntax error, unexpected 'C', expecting '='", 2, 3),
        ("A-B=1", "syntax error, unexpected '-B', expecting '='", 1, 2),
        ("CPU=1\nMEMORY 128", "syntax error, unexpected '128', expecting '='", 2, 8),
        ("A " + "9" * 50, f"syntax error, unexpected '{'9' * 40}...', expecting '='", 1, 3),
        ("A=1\n\nB=,", "syntax error, unexpected ',', expecting value", 3, 3),
        ("A=1 ]", "syntax error, unexpected ']', expecting attribute name", 1, 5),
        ('A=1\nB = "abc\nd', "unterminated quoted value starting", 2, 5),
        ('A = "ab\\"', "unterminated quoted value starting", 1, 5),
        ("A=1\nEC2 = [ AMI=x,\n KEY=y", "unterminated vector EC2 (missing ']')", 2, 7),
        ("EC2=[AMI=", "unterminated vector EC2 (missing ']')", 1, 5),
        (
            "EC2=[AMI=x,,B=y]",
            "syntax error, unexpected ',', expecting key of vector EC2 or ']'",
            1,
            12,
        ),
        ("V=[A=[B=1]]", "syntax error, unexpected '[', expecting value in vector V", 1, 6),
        ("V=[A]", "syntax error, unexpected ']', expecting '='", 1, 5),
        ("é=1", "syntax error, unexpected 'é', expecting attribute name", 1, 1),
        ("A=1 'B'=2", 'syntax error, unexpected "\'B\'", expecting attribute name', 1, 5),
    ],
)
def test_syntax_errors(text: str, message: str, line: int, column: int) -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        parse(text)
    assert caught.value.line == line
    assert caught.value.column == column
    assert str(caught.value) == f"{message} at line {line}, column {column}"


def test_syntax_error_is_a_template_error() -> None:
    with pytest.raises(TemplateError):
        parse("=")


def test_too_large_input_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cloudburst.template.syntax.MAX_TEMPLATE_CHARS", 10)
    with pytest.raises(TemplateError, match="too large"):
        parse("A=123456789")
    with pytest.raises(TemplateError, match="too large"):
        parse_xml("<T><A>1</A></T>")


# -- the Template type ------------------------------------------------------------


def test_lookups_are_case_insensitive() -> None:
    template = parse("Cpu=1 Ec2=[ami=x]")
    assert "cpu" in template and "CPU" in template and "Ec2" in template
    assert "MEMORY" not in template
    assert 3 not in template
    assert template.get("cPu") == "1"
    assert template.get_vector("ec2") == {"AMI": "x"}
    assert template.get("MEMORY") is None
    assert template.get_vector("CPU") is None


def test_values_handed_out_are_copies() -> None:
    template = parse("V=[A=1]")
    vector = template.get_vector("V")
    assert vector is not None
    vector["A"] = "changed"
    for _, value in template:
        assert isinstance(value, dict)
        value["B"] = "added"
    template.vectors("V")[0]["C"] = "added"
    assert template.get_vector("V") == {"A": "1"}


def test_constructor_normalises() -> None:
    template = Template([("cpu", "1"), ("ec2", {"ami": "x", "AMI": "y"})])
    assert list(template) == [("CPU", "1"), ("EC2", {"AMI": "x"})]


@pytest.mark.parametrize("name", ["", "A-B", "A B", "É", "A.B"])
def test_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(TemplateError, match="invalid attribute name"):
        Template().append(name, "1")
    with pytest.raises(TemplateError, match="invalid attribute name"):
        Template().append("V", {name: "1"})


def test_invalid_values_are_refused() -> None:
    with pytest.raises(TemplateError, match="string or a vector"):
        Template().append("A", 1)  # type: ignore[arg-type]
    with pytest.raises(TemplateError, match="must be strings"):
        Template().append("A", {"K": 1})  # type: ignore[dict-item]


def test_normalize_name() -> None:
    assert normalize_name("cpu") == "CPU"
    assert normalize_name("0") == "ONE_0"
    assert normalize_name("xml_rpc") == "ONE_XML_RPC"
    assert normalize_name(normalize_name("xml_rpc")) == "ONE_XML_RPC"


def test_append_set_remove() -> None:
    template = parse("A=1 B=2 A=3 C=4")
    template.append("a", "5")
    assert template.get_all("A") == ["1", "3", "5"]
    template.set("a", {"K": "v"})
    assert list(template) == [("A", {"K": "v"}), ("B", "2"), ("C", "4")]
    template.set("D", "6")
    assert template.names() == ["A", "B", "C", "D"]
    assert template.remove("b") == 1
    assert template.remove("B") == 0
    assert template.names() == ["A", "C", "D"]


def test_merge_replace_is_host_semantics() -> None:
    host = parse("HOSTNAME=h1 FREECPU=10 FREECPU=11 ARCH=x86_64")
    host.merge(parse("FREECPU=20 NEW=1 FREECPU=21"), replace=True)
    assert list(host) == [
        ("HOSTNAME", "h1"),
        ("ARCH", "x86_64"),
        ("FREECPU", "20"),
        ("NEW", "1"),
        ("FREECPU", "21"),
    ]


def test_merge_append_is_vm_semantics() -> None:
    vm = parse("CPU=1 EC2=[AMI=a]")
    other = parse("EC2=[AMI=b] CPU=2")
    vm.merge(other, replace=False)
    assert list(vm) == [("CPU", "1"), ("EC2", {"AMI": "a"}), ("EC2", {"AMI": "b"}), ("CPU", "2")]
    assert list(other) == [("EC2", {"AMI": "b"}), ("CPU", "2")]


def test_merge_with_itself() -> None:
    template = parse("A=1 V=[K=v]")
    template.merge(template, replace=False)
    assert len(template) == 4
    template.merge(template, replace=True)
    assert template.get_all("A") == ["1", "1"]


def test_copy_is_independent() -> None:
    template = parse("A=1 V=[K=v]")
    clone = template.copy()
    assert clone == template
    clone.set("A", "2")
    clone.append("B", "3")
    assert template == parse("A=1 V=[K=v]")


def test_equality() -> None:
    assert parse("A=1 B=2") == parse('a = "1"\nb = 2')
    assert parse("A=1 B=2") != parse("B=2 A=1")
    assert parse("V=[A=1,B=2]") != parse("V=[B=2,A=1]")  # vector key order counts
    assert parse("A=1") != parse("A=[]")
    assert parse("A=1") != "A=1"


def test_as_flat_dict() -> None:
    template = parse("A=1 V=[K=v] A=2 B=3 V=x")
    assert template.as_flat_dict() == {"A": "1", "B": "3", "V": "x"}


def test_repr_shows_attributes() -> None:
    assert repr(parse("A=1")) == "Template([('A', '1')])"


# -- text serialisation -------------------------------------------------------------------


def test_to_text_format() -> None:
    template = Template([("NAME", 'say "hi"\\'), ("EC2", {"AMI": "x", "KEY": "y"}), ("E", {})])
    assert template.to_text() == ('NAME="say \\"hi\\"\\\\"\nEC2=[\n  AMI="x",\n  KEY="y" ]\nE=[]\n')
    assert Template().to_text() == ""


def test_seed_templates_round_trip_through_text() -> None:
    for text in [SEED_EC2_TEMPLATE, SEED_PUBLIC_CLOUD_TEMPLATE, SEED_MULTI_SITE, SPEC_EXAMPLE]:
        template = parse(text)
        assert parse(template.to_text()) == template


# -- XML ---------------------------------------------------------------------------------


def test_to_xml_format() -> None:
    template = parse('CPU=0.5 E="" EC2=[AMI="ami-1", KEYPAIR=k] V=[]')
    assert template.to_xml() == (
        "<TEMPLATE><CPU><![CDATA[0.5]]></CPU><E><![CDATA[]]></E>"
        "<EC2><AMI><![CDATA[ami-1]]></AMI><KEYPAIR><![CDATA[k]]></KEYPAIR></EC2>"
        "<V/></TEMPLATE>"
    )
    assert Template().to_xml("USER_TEMPLATE") == "<USER_TEMPLATE></USER_TEMPLATE>"


def test_plain_xml_format() -> None:
    template = parse('CPU=1 N="a & <b> ]]>" PUBLIC_CLOUD=[TYPE=provider_name]')
    assert template.to_xml(plain=True) == (
        "<TEMPLATE><CPU>1</CPU><N>a &amp; &lt;b&gt; ]]&gt;</N>"
        "<PUBLIC_CLOUD><TYPE>provider_name</TYPE></PUBLIC_CLOUD></TEMPLATE>"
    )
    assert parse_xml(template.to_xml(plain=True)) == template


def test_cdata_end_marker_is_split() -> None:
    template = Template([("A", "x]]>y]]>"), ("B", "]]]>>")])
    xml = template.to_xml()
    assert "<A><![CDATA[x]]]]><![CDATA[>y]]]]><![CDATA[>]]></A>" in xml
    assert parse_xml(xml) == template


def test_illegal_xml_characters_are_dropped() -> None:
    template = Template([("A", "a\x00b\x1bc\ufffe\td\ud800")])
    assert parse_xml(template.to_xml()).get("A") == "abc\td"


def test_carriage_returns_survive_xml() -> None:
    template = Template([("A", "a\r\nb\rc")])
    assert parse_xml(template.to_xml()) == template
    assert parse_xml(template.to_xml(plain=True)) == template


def test_parse_xml_shapes() -> None:
    xml = """<?xml version="1.0" encoding="UTF-8"?>
<VM_TEMPLATE>
  <cpu>1</cpu>
  <NAME><![CDATA[web & db]]></NAME>
  <AMP>a &amp; b &lt;c&gt;</AMP>
  <EMPTY/>
  <EC2 attr="ignored">
    <AMI>ami-1</AMI>
    <ami>second ignored</ami>
    <KEYPAIR/>
  </EC2>
  <!-- a comment -->
  <EC2><AMI>ami-2</AMI></EC2>
</VM_TEMPLATE>"""
    assert list(parse_xml(xml)) == [
        ("CPU", "1"),
        ("NAME", "web & db"),
        ("AMP", "a & b <c>"),
        ("EMPTY", ""),
        ("EC2", {"AMI": "ami-1", "KEYPAIR": ""}),
        ("EC2", {"AMI": "ami-2"}),
    ]


def test_parse_xml_empty_root() -> None:
    assert parse_xml("<TEMPLATE/>") == Template()


def test_parse_xml_refuses_doctype_and_entities() -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        "<TEMPLATE><A>&lol2;</A></TEMPLATE>"
    )
    with pytest.raises(TemplateError, match="DOCTYPE"):
        parse_xml(laughs)
    with pytest.raises(TemplateError, match="DOCTYPE"):
        parse_xml('<!DOCTYPE T SYSTEM "file:///etc/passwd"><T/>')


def test_doctype_text_inside_cdata_is_fine() -> None:
    template = Template([("PAGE", "<!DOCTYPE html><!ENTITY x 'y'>")])
    assert parse_xml(template.to_xml()) == template


@pytest.mark.parametrize(
    ("xml", "problem", "line", "column"),
    [
        ("<T><A>1</B></T>", "mismatched tag", 1, 10),
        ("<T>\n<A>1</A>\n<B>", "no element found", 3, 4),
        ("<T><A>&undefined;</A></T>", "undefined entity", 1, 7),
        ("<T></T><U/>", "junk after document element", 1, 8),
        ("", "no element found", 1, 1),
    ],
)
def test_parse_xml_malformed(xml: str, problem: str, line: int, column: int) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_xml(xml)
    assert str(caught.value) == (
        f"template XML is not well formed: {problem} at line {line}, column {column}"
    )


def test_parse_xml_refuses_deeper_nesting_and_bad_names() -> None:
    with pytest.raises(TemplateError, match="nests too deep: V/K"):
        parse_xml("<T><V><K><X>1</X></K></V></T>")
    with pytest.raises(TemplateError, match="invalid attribute name 'A-B'"):
        parse_xml("<T><A-B>1</A-B></T>")


def test_parse_any_dispatch() -> None:
    assert parse_any("  \n<T><A>1</A></T>") == parse("A=1")
    assert parse_any("A=1") == parse("A=1")
    assert parse_any("") == Template()


# -- JSON --------------------------------------------------------------------------------


def test_json_form() -> None:
    template = parse("A=1 V=[K=v, J=w] E=[]")
    assert template.to_json() == [["A", "1"], ["V", [["K", "v"], ["J", "w"]]], ["E", []]]
    assert Template.from_json(json.loads(json.dumps(template.to_json()))) == template


@pytest.mark.parametrize(
    "data",
    [
        {"A": "1"},
        [["A"]],
        [[1, "x"]],
        [["A", 1]],
        [["A", [["K"]]]],
        [["A", [["K", 2]]]],
        [["A-B", "1"]],
    ],
)
def test_from_json_refuses_malformed_data(data: object) -> None:
    with pytest.raises(TemplateError):
        Template.from_json(data)


# -- properties --------------------------------------------------------------------------

_names = st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)
# Values are built from fragments so that the awkward ones (quotes, escapes,
# comment and bracket characters, CDATA ends) show up often.
_tricky_text = st.lists(
    st.one_of(
        st.characters(),
        st.sampled_from(['"', "\\", '\\"', "#", "[", "]", "=", ",", "\n", "\r", " ", "]]>"]),
    ),
    max_size=12,
).map("".join)
_xml_text = st.lists(
    st.one_of(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
        st.sampled_from(['"', "\\", "#", "[", "]", "=", "\n", "\r", "\t", "]]>", "<", "&"]),
    ),
    max_size=12,
).map("".join)


def _templates(text: st.SearchStrategy[str], empty_vectors: bool) -> st.SearchStrategy[Template]:
    vectors = st.dictionaries(_names, text, min_size=0 if empty_vectors else 1, max_size=4)
    values: st.SearchStrategy[Value] = st.one_of(text, vectors)
    return st.lists(st.tuples(_names, values), max_size=6).map(Template)


@given(_templates(_tricky_text, empty_vectors=True))
@settings(max_examples=300)
def test_text_round_trip(template: Template) -> None:
    assert parse(template.to_text()) == template


@given(_templates(_xml_text, empty_vectors=False))
@settings(max_examples=300)
def test_xml_round_trip(template: Template) -> None:
    assert parse_xml(template.to_xml()) == template
    assert parse_any(template.to_xml("VM")) == template
    assert parse_xml(template.to_xml(plain=True)) == template


@given(_templates(_tricky_text, empty_vectors=True))
def test_json_round_trip(template: Template) -> None:
    assert Template.from_json(json.loads(json.dumps(template.to_json()))) == template


@given(st.text(alphabet=st.sampled_from('AB1_ =[],"\\#\n\t\r-x'), max_size=40))
@settings(max_examples=500)
def test_parse_fails_only_with_syntax_errors(text: str) -> None:
    try:
        template = parse(text)
    except TemplateSyntaxError as error:
        assert error.line >= 1 and error.column >= 1
    else:
        assert parse(template.to_text()) == template
