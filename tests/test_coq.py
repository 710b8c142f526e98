"""The Coq proofs in proofs/coq/: every file compiles, none is left unfinished, and no
theorem rests on anything beyond the standard library's real numbers.

Each .v file is compiled with coqc in a temporary directory (the source tree stays clean).
A file fails if its source, with comments and strings removed, uses a command that
skips a proof or adds an assumption (Admitted, admit, Axiom, Parameter, ...), or if
`Print Assumptions` on one of its theorems or lemmas names an axiom other than the
ones Coq's standard real numbers are built on (see ``REALS_AXIOMS``).

Skipped, with the reason, where coqc is not installed (`apt-get install -y coq`);
CI installs it (.ci/run), so there it always runs.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROOFS = ROOT / "proofs"
COQ_DIR = PROOFS / "coq"
SOURCES = sorted(COQ_DIR.glob("*.v"))
EXPECTED = {"Proposition1.v", "Proposition2.v", "Gradients.v", "L2Adder.v"}

COQC = shutil.which("coqc")
needs_coqc = pytest.mark.skipif(
    COQC is None, reason="coqc not found: install Coq (`apt-get install -y coq`) to check proofs/coq/")

# Commands that leave a proof unfinished or add an unproved assumption. The files use no
# Sections, so Variable and Hypothesis would be global assumptions too.
FORBIDDEN = re.compile(
    r"\b(Admitted|admit|give_up|Axiom|Axioms|Parameter|Parameters|Conjecture|"
    r"Hypothesis|Hypotheses|Variable|Variables)\b")

# The axioms behind Coq's standard library of real numbers (Reals): since Coq 8.12 the
# reals are built from Cauchy sequences using these, so `Print Assumptions` lists them
# for any statement about R (even x + 0 = x) and never says "Closed under the global
# context" there. Anything else would be an assumption made by the proofs.
REALS_AXIOMS = {
    "ClassicalDedekindReals.sig_forall_dec",
    "ClassicalDedekindReals.sig_not_dec",
    "FunctionalExtensionality.functional_extensionality_dep",
}

# The standard library defines the logarithm `ln` with one more axiom, the excluded
# middle; only the statements that mention ln may depend on it.
LN_AXIOMS = REALS_AXIOMS | {"Classical_Prop.classic"}
USES_LN = {"ln_le_iff", "prop2_steps_to_tolerance"}

LOGICAL_DIR = "MinAdder"


def strip_comments_and_strings(text):
    """The Coq source without its comments (nested ones included) and string literals."""
    out, i, depth, n = [], 0, 0, len(text)
    while i < n:
        if text.startswith("(*", i):
            depth += 1
            i += 2
        elif depth and text.startswith("*)", i):
            depth -= 1
            i += 2
        elif depth:
            i += 1
        elif text[i] == '"':
            j = i + 1
            while j < n:
                if text[j] == '"':
                    if text.startswith('""', j):  # "" is an escaped quote inside a string
                        j += 2
                        continue
                    break
                j += 1
            out.append(" ")
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def declared(code, kinds=("Theorem", "Lemma")):
    """Names of the statements of the given kinds declared in stripped source code."""
    pattern = r"^\s*(?:%s)\s+([A-Za-z_][A-Za-z0-9_']*)" % "|".join(kinds)
    return re.findall(pattern, code, flags=re.M)


def parse_assumptions(output):
    """Split coqc's output of consecutive `Print Assumptions` into one axiom set each."""
    blocks, current = [], None
    for line in output.splitlines():
        if line.startswith("Closed under the global context"):
            blocks.append(set())
            current = None
        elif line.startswith("Axioms:"):
            current = set()
            blocks.append(current)
        elif current is not None and line and not line[0].isspace():
            current.add(line.split()[0])
    return blocks


def coqc(args, cwd):
    return subprocess.run([COQC, "-q", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


# ------------------------------------------------------------------ without coqc
def test_every_result_has_its_file():
    assert EXPECTED <= {p.name for p in SOURCES}


def test_the_scanner_sees_through_comments_and_strings():
    src = '(* Admitted (* nested admit *) Axiom *) Definition s := "Parameter".\nQed.'
    assert not FORBIDDEN.search(strip_comments_and_strings(src))
    assert FORBIDDEN.search(strip_comments_and_strings("Proof. admit. Admitted."))
    assert FORBIDDEN.search(strip_comments_and_strings("(* a *) Axiom ax : False."))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_unfinished_proof_or_assumption_in_the_source(path):
    code = strip_comments_and_strings(path.read_text())
    found = FORBIDDEN.findall(code)
    assert not found, f"{path.name} uses {sorted(set(found))}"
    assert declared(code, ("Theorem",)), f"{path.name} states no Theorem"
    # Every proof is closed with Qed (Defined would also be fine, but none is used).
    assert code.count("Proof.") == len(re.findall(r"\bQed\.", code))


def test_the_pages_name_theorems_that_exist():
    theorems = set()
    for path in SOURCES:
        theorems |= set(declared(strip_comments_and_strings(path.read_text()), ("Theorem",)))
    quoted = set()
    for page in sorted(PROOFS.glob("*.md")):
        quoted |= set(re.findall(r"`([A-Za-z_][A-Za-z0-9_']*)`", page.read_text()))
    # every Coq theorem is named by some page ...
    assert theorems <= quoted, f"proved but named by no page: {sorted(theorems - quoted)}"
    # ... and every name a page gives in the theorems' naming scheme is proved
    named = {w for w in quoted
             if re.match(r"(prop[12]_|eq28|sgn_|full_precision_|hardtanh_|adder_output_)", w)}
    assert named <= theorems, f"named in proofs/*.md but not proved: {sorted(named - theorems)}"


# --------------------------------------------------------------------- with coqc
@needs_coqc
@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_compiles_and_assumes_only_the_reals_axioms(path, tmp_path):
    shutil.copy(path, tmp_path / path.name)
    done = coqc(["-Q", ".", LOGICAL_DIR, path.name], tmp_path)
    assert done.returncode == 0, f"coqc {path.name} failed:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / path.with_suffix(".vo").name).exists()

    names = declared(strip_comments_and_strings(path.read_text()))
    assert names
    # One `Print Assumptions` on a tuple of every Theorem and Lemma of the file (one on
    # each name would take much longer), and one on those that use ln.
    module = f"{LOGICAL_DIR}.{path.stem}"
    groups = [(g, allowed) for g, allowed in
              (([n for n in names if n not in USES_LN], REALS_AXIOMS),
               ([n for n in names if n in USES_LN], LN_AXIOMS)) if g]
    check = tmp_path / "Assumptions.v"
    lines = [f"Require {module}."]
    for k, (group, _) in enumerate(groups):
        lines.append(f"Definition statements{k} := ({', '.join(f'{module}.{n}' for n in group)}).")
        lines.append(f"Print Assumptions statements{k}.")
    check.write_text("\n".join(lines) + "\n")
    done = coqc(["-Q", ".", LOGICAL_DIR, check.name], tmp_path)
    assert done.returncode == 0, f"Print Assumptions failed:\n{done.stdout}\n{done.stderr}"
    blocks = parse_assumptions(done.stdout)
    assert len(blocks) == len(groups), done.stdout
    for (group, allowed), axioms in zip(groups, blocks):
        assert axioms <= allowed, \
            f"{path.name}: {group} assume {sorted(axioms - allowed)}:\n{done.stdout}"


@needs_coqc
@pytest.mark.skipif(shutil.which("make") is None, reason="make not found")
def test_the_documented_make_command_builds_every_file(tmp_path):
    copy = tmp_path / "proofs"
    shutil.copytree(PROOFS, copy, ignore=shutil.ignore_patterns(
        "*.vo", "*.vok", "*.vos", "*.glob", ".*.aux", ".*.cache"))
    done = subprocess.run(["make", "-C", str(copy), f"COQC={COQC}"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in SOURCES:
        assert (copy / "coq" / path.with_suffix(".vo").name).exists()
