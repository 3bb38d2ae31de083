/** Lower-cased runs of letters and digits: "Follow-up w/ FBX's lead" → follow, up, w, fbx, s, lead. */
export function tokenize(text: string): string[] {
  return text.normalize('NFKC').toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

/** Endings tried, longest first, when a word is not in the table ("followups" → "followup"). */
const SUFFIXES = ['ations', 'ation', 'ings', 'ing', 'ies', 'ied', 'ers', 'er', 'es', 'ed', 'ly', 's'];

/** Candidate base forms of an unknown word, most specific first. */
export function baseForms(word: string): string[] {
  const out: string[] = [];
  for (const suffix of SUFFIXES) {
    if (word.length - suffix.length < 3 || !word.endsWith(suffix)) continue;
    const stem = word.slice(0, -suffix.length);
    if (suffix === 'ies' || suffix === 'ied') out.push(`${stem}y`);
    out.push(stem, `${stem}e`);
  }
  return out;
}

/** Character trigrams with boundary marks: "fbx" → "<fb", "fbx", "bx>". */
export function trigrams(word: string): string[] {
  const w = `<${word}>`;
  const out: string[] = [];
  for (let i = 0; i + 3 <= w.length; i++) out.push(w.slice(i, i + 3));
  return out;
}
