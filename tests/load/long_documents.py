"""A long-document workload for `genq bench --workload` (not a test): long prompts in several languages, one
long shared system prompt, long answers.

    python tests/load/long_documents.py [--n 24] [--seed 3] > long.jsonl

Each request: the shared system prompt (about 400 words), then a document of 600 to 2,200 words (English,
French, German, Spanish) or 400 to 1,200 characters (Japanese, Chinese) made of sentences drawn from small
word lists, then a question; it asks for 200 to 400 new tokens with "ignore_eos", so every system does the
same work. The line format is the shared bench kit's (workload.py).
"""
from __future__ import annotations

import argparse
import json
import random

WORDS = {
    "en": "the report committee market river city engine budget winter village science history people water "
          "council harvest railway museum teacher doctor garden bridge school season letter island company".split(),
    "fr": "le rapport comité marché rivière ville moteur budget hiver village science histoire peuple eau "
          "conseil récolte chemin musée professeur médecin jardin pont école saison lettre île société".split(),
    "de": "der Bericht Ausschuss Markt Fluss Stadt Motor Haushalt Winter Dorf Wissenschaft Geschichte Volk "
          "Wasser Rat Ernte Eisenbahn Museum Lehrer Arzt Garten Brücke Schule Jahreszeit Brief Insel".split(),
    "es": "el informe comité mercado río ciudad motor presupuesto invierno pueblo ciencia historia gente agua "
          "consejo cosecha ferrocarril museo maestro médico jardín puente escuela estación carta isla".split(),
}
CJK = {
    "ja": ("報告 委員会 市場 川 都市 機関 予算 冬 村 科学 歴史 人々 水 議会 収穫 鉄道 博物館 先生 医者 庭 橋 "
           "学校").split(),
    "zh": "报告 委员会 市场 河流 城市 发动机 预算 冬天 村庄 科学 历史 人民 水 议会 收获 铁路 博物馆 老师 医生".split(),
}
QUESTIONS = {"en": "Summarize the document above in detail.", "fr": "Résumez le document ci-dessus en détail.",
             "de": "Fasse das obige Dokument ausführlich zusammen.", "es": "Resume el documento anterior en detalle.",
             "ja": "上の文書を詳しく要約してください。", "zh": "请详细总结上面的文件。"}


def sentence(rng: random.Random, words: list[str], n: int, sep: str = " ", end: str = ".") -> str:
    return sep.join(rng.choice(words) for _ in range(n)) + end


def document(rng: random.Random, lang: str) -> str:
    if lang in CJK:
        chars = rng.randint(400, 1200)
        out = ""
        while len(out) < chars:
            out += sentence(rng, CJK[lang], rng.randint(5, 14), sep="", end="。")
        return out
    words, target, out = WORDS[lang], rng.randint(600, 2200), []
    while sum(len(s.split()) for s in out) < target:
        out.append(sentence(rng, words, rng.randint(8, 20)).capitalize())
    return " ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    system = "You are a careful analyst. " + " ".join(sentence(rng, WORDS["en"], 12).capitalize() for _ in range(34))
    langs = ["en", "fr", "de", "es", "ja", "zh"]
    for i in range(a.n):
        lang = langs[i % len(langs)]
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": document(rng, lang) + "\n\n" + QUESTIONS[lang]}]
        print(json.dumps({"id": f"d{i}", "messages": messages, "max_new_tokens": rng.randint(200, 400),
                          "ignore_eos": True, "params": {"do_sample": False}}, ensure_ascii=False))


if __name__ == "__main__":
    main()
