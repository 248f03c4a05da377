// The text clean-up that CLIP tokenizers run first: a TypeScript re-implementation of the parts of
// ftfy 6.1 `fix_text` (default config) that the SD tokenizers depend on, plus Python's
// `html.unescape` for the openai path (sd-formats.md §9.2 step 1; fixtures/README.md §1).
//
// Why this exists: transformers' slow CLIPTokenizer, which A1111 (SD1), diffusers and ComfyUI use,
// runs `ftfy.fix_text` before anything else, and the fixture column `hf_slow_ftfy` shows that it
// changes ids for curly quotes, HTML entities, ligatures, fullwidth text, ANSI escapes and mojibake.
// There is no JavaScript port of ftfy we may depend on, so the steps are rebuilt here from ftfy's
// documented behaviour and checked against ftfy itself on the fixture and on generated strings.
//
// What fixText does, in ftfy's order, repeated until the text stops changing, per line:
//   1. HTML entities (`&amp;` …), unless the line contains a literal '<' ("auto" mode).
//   2. Mojibake: UTF-8 that was decoded as a single-byte code page ("cafÃ©" → "café").
//   3. C1 controls → their Windows-1252 characters; 4. Latin ligatures (ﬁ → fi);
//   5. fullwidth/halfwidth forms → NFKC (Ｆ → F); 6. curly quotes → straight ones;
//   7. line breaks → \n; 8. lone surrogates → U+FFFD; 9. ANSI escapes removed;
//   10. control characters removed; 11. NFC.
//
// Known differences from ftfy (all in step 2, all in the direction of fixing less):
//   - ftfy decides whether text "looks like mojibake" with a large heuristic (badness.py). Here a
//     smaller test is used: a C1 control character, or a two-character pair that is the start of a
//     UTF-8 sequence read as Windows-1252 and that ftfy calls bad in every context tried (the table
//     in MOJIBAKE_PAIR below was derived by running ftfy on all such pairs). Text that ftfy would
//     fix only through another of its clues is left unchanged here.
//   - ftfy's sub-steps `restore_byte_a0` (a 0xA0 byte that became a space) and the CESU-8
//     `utf-8-variants` decoder are not reproduced.
//   - HTML: named entities are the 252 of HTML 4 plus &apos; (and their upper-case forms, as ftfy
//     adds); names that exist only in HTML5 (`&bigstar;`) are left as they are.

/** Python `str.isspace` characters (what `str.strip()` removes). */
const PY_SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/** Python's `str.strip()`: trims Unicode whitespace as CPython defines it (no U+FEFF, unlike JS trim). */
export function pyStrip(text: string): string {
  return text.replace(PY_STRIP_RE, '');
}
const PY_STRIP_RE = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'g');

// ---------------------------------------------------------------------------------------------
// HTML entities

/** HTML 4 entity names (plus &apos;) and the code points HTML5 gives them (&lang; and &rang; moved to U+27E8/9). */
const HTML4 =
  'quot:22 amp:26 apos:27 lt:3c gt:3e nbsp:a0 iexcl:a1 cent:a2 pound:a3 curren:a4 yen:a5 brvbar:a6 ' +
  'sect:a7 uml:a8 copy:a9 ordf:aa laquo:ab not:ac shy:ad reg:ae macr:af deg:b0 plusmn:b1 sup2:b2 ' +
  'sup3:b3 acute:b4 micro:b5 para:b6 middot:b7 cedil:b8 sup1:b9 ordm:ba raquo:bb frac14:bc ' +
  'frac12:bd frac34:be iquest:bf Agrave:c0 Aacute:c1 Acirc:c2 Atilde:c3 Auml:c4 Aring:c5 AElig:c6 ' +
  'Ccedil:c7 Egrave:c8 Eacute:c9 Ecirc:ca Euml:cb Igrave:cc Iacute:cd Icirc:ce Iuml:cf ETH:d0 ' +
  'Ntilde:d1 Ograve:d2 Oacute:d3 Ocirc:d4 Otilde:d5 Ouml:d6 times:d7 Oslash:d8 Ugrave:d9 Uacute:da ' +
  'Ucirc:db Uuml:dc Yacute:dd THORN:de szlig:df agrave:e0 aacute:e1 acirc:e2 atilde:e3 auml:e4 ' +
  'aring:e5 aelig:e6 ccedil:e7 egrave:e8 eacute:e9 ecirc:ea euml:eb igrave:ec iacute:ed icirc:ee ' +
  'iuml:ef eth:f0 ntilde:f1 ograve:f2 oacute:f3 ocirc:f4 otilde:f5 ouml:f6 divide:f7 oslash:f8 ' +
  'ugrave:f9 uacute:fa ucirc:fb uuml:fc yacute:fd thorn:fe yuml:ff OElig:152 oelig:153 Scaron:160 ' +
  'scaron:161 Yuml:178 fnof:192 circ:2c6 tilde:2dc Alpha:391 Beta:392 Gamma:393 Delta:394 ' +
  'Epsilon:395 Zeta:396 Eta:397 Theta:398 Iota:399 Kappa:39a Lambda:39b Mu:39c Nu:39d Xi:39e ' +
  'Omicron:39f Pi:3a0 Rho:3a1 Sigma:3a3 Tau:3a4 Upsilon:3a5 Phi:3a6 Chi:3a7 Psi:3a8 Omega:3a9 ' +
  'alpha:3b1 beta:3b2 gamma:3b3 delta:3b4 epsilon:3b5 zeta:3b6 eta:3b7 theta:3b8 iota:3b9 kappa:3ba ' +
  'lambda:3bb mu:3bc nu:3bd xi:3be omicron:3bf pi:3c0 rho:3c1 sigmaf:3c2 sigma:3c3 tau:3c4 ' +
  'upsilon:3c5 phi:3c6 chi:3c7 psi:3c8 omega:3c9 thetasym:3d1 upsih:3d2 piv:3d6 ensp:2002 emsp:2003 ' +
  'thinsp:2009 zwnj:200c zwj:200d lrm:200e rlm:200f ndash:2013 mdash:2014 lsquo:2018 rsquo:2019 ' +
  'sbquo:201a ldquo:201c rdquo:201d bdquo:201e dagger:2020 Dagger:2021 bull:2022 hellip:2026 ' +
  'permil:2030 prime:2032 Prime:2033 lsaquo:2039 rsaquo:203a oline:203e frasl:2044 euro:20ac ' +
  'image:2111 weierp:2118 real:211c trade:2122 alefsym:2135 larr:2190 uarr:2191 rarr:2192 darr:2193 ' +
  'harr:2194 crarr:21b5 lArr:21d0 uArr:21d1 rArr:21d2 dArr:21d3 hArr:21d4 forall:2200 part:2202 ' +
  'exist:2203 empty:2205 nabla:2207 isin:2208 notin:2209 ni:220b prod:220f sum:2211 minus:2212 ' +
  'lowast:2217 radic:221a prop:221d infin:221e ang:2220 and:2227 or:2228 cap:2229 cup:222a int:222b ' +
  'there4:2234 sim:223c cong:2245 asymp:2248 ne:2260 equiv:2261 le:2264 ge:2265 sub:2282 sup:2283 ' +
  'nsub:2284 sube:2286 supe:2287 oplus:2295 otimes:2297 perp:22a5 sdot:22c5 lceil:2308 rceil:2309 ' +
  'lfloor:230a rfloor:230b lang:27e8 rang:27e9 loz:25ca spades:2660 clubs:2663 hearts:2665 ' +
  'diams:2666';

/** Names that also count without the ';' (the HTML5 "legacy" set: Latin-1 names and four more). */
function isLegacyName(name: string, cp: number): boolean {
  return (cp >= 0xa0 && cp <= 0xff) || name === 'amp' || name === 'lt' || name === 'gt' || name === 'quot';
}

/** `&name;` → text for ftfy's unescape_html; `name[;]` → text for Python's html.unescape. */
const FTFY_ENTITIES = new Map<string, string>();
const PY_ENTITIES = new Map<string, string>();
{
  // Upper-case names that already mean something in HTML5, so ftfy does not add an upper-cased
  // lower-case entity under that name.
  const upperTaken = new Set(['QUOT', 'AMP', 'LT', 'GT', 'COPY', 'REG', 'ETH', 'THORN', 'TRADE']);
  const extraUpper: [string, string][] = [
    ['AMP', '&'], ['LT', '<'], ['GT', '>'], ['QUOT', '"'], ['COPY', '\u00a9'], ['REG', '\u00ae'], ['TRADE', '\u2122'],
  ];
  for (const item of HTML4.split(' ')) {
    const [name, hex] = item.split(':');
    const cp = parseInt(hex, 16);
    const ch = String.fromCodePoint(cp);
    FTFY_ENTITIES.set(`&${name};`, ch);
    PY_ENTITIES.set(`${name};`, ch);
    if (isLegacyName(name, cp)) PY_ENTITIES.set(name, ch);
    // ftfy also decodes a lower-case entity that was upper-cased (`&EACUTE;` → 'É').
    const upper = name.toUpperCase();
    if (name === name.toLowerCase() && !upperTaken.has(upper)) FTFY_ENTITIES.set(`&${upper};`, ch.toUpperCase());
  }
  for (const [name, ch] of extraUpper) {
    FTFY_ENTITIES.set(`&${name};`, ch);
    PY_ENTITIES.set(`${name};`, ch);
    if (name !== 'TRADE') PY_ENTITIES.set(name, ch);
  }
}

/** Python html._invalid_charrefs: 0x80–0x9F are read as Windows-1252, as browsers do. */
function numericCharRef(num: number): string {
  if (num === 0) return '\ufffd';
  if (num === 0x0d) return '\r';
  if (num >= 0x80 && num <= 0x9f) return WIN1252_C1[num - 0x80];
  if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
  // Python html._invalid_codepoints decode to nothing.
  if ((num >= 0x1 && num <= 0x8) || num === 0xb || (num >= 0xe && num <= 0x1f) || num === 0x7f) return '';
  if ((num >= 0xfdd0 && num <= 0xfdef) || (num & 0xfffe) === 0xfffe) return '';
  return String.fromCodePoint(num);
}

const PY_CHARREF_RE = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/g;

/** Python's `html.unescape` (used twice by openai's `basic_clean`; §9.2). */
export function htmlUnescape(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(PY_CHARREF_RE, (whole, s: string) => {
    if (s[0] === '#') {
      const hex = s[1] === 'x' || s[1] === 'X';
      const digits = s.slice(hex ? 2 : 1).replace(/;$/, '');
      return numericCharRef(parseInt(digits, hex ? 16 : 10));
    }
    const hit = PY_ENTITIES.get(s);
    if (hit !== undefined) return hit;
    // The longest known legacy name that prefixes it: "&ampfoo" → "&foo".
    for (let x = s.length - 1; x > 1; x--) {
      const pre = PY_ENTITIES.get(s.slice(0, x));
      if (pre !== undefined) return pre + s.slice(x);
    }
    return whole;
  });
}

const FTFY_ENTITY_RE = /&#?[0-9A-Za-z]{1,24};/g;

/** ftfy's unescape_html: whole entities only, and a numeric one must consume its ';'. */
function unescapeHtml(text: string): string {
  return text.replace(FTFY_ENTITY_RE, (m) => {
    const hit = FTFY_ENTITIES.get(m);
    if (hit !== undefined) return hit;
    if (m.startsWith('&#')) {
      const out = htmlUnescape(m);
      return out.includes(';') ? m : out;
    }
    return m;
  });
}

// ---------------------------------------------------------------------------------------------
// Single-byte code pages (bytes 0x80–0xFF), in the order ftfy tries them. "sloppy" tables keep the
// bytes a code page leaves undefined as the same-numbered character, and stand U+FFFD for byte 0x1A.
// The strings were produced with Python's codecs (Node's TextDecoder reads windows-1252 as Latin-1).

const CODE_PAGES: Record<string, string> = {
  'sloppy-windows-1252':
    '€\u0081‚ƒ„…†‡ˆ‰Š‹Œ\u008dŽ\u008f\u0090‘’“”•–—˜™š›œ\u009džŸ\u00a0¡¢£¤¥¦§¨©ª«¬\u00ad®¯°±²³´µ¶·¸¹º»¼½¾¿' +
    'ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖ×ØÙÚÛÜÝÞßàáâãäåæçèéêëìíîïðñòóôõö÷øùúûüýþÿ',
  'sloppy-windows-1251':
    'ЂЃ‚ѓ„…†‡€‰Љ‹ЊЌЋЏђ‘’“”•–—\u0098™љ›њќћџ\u00a0ЎўЈ¤Ґ¦§Ё©Є«¬\u00ad®Ї°±Ііґµ¶·ё№є»јЅѕї' +
    'АБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯабвгдежзийклмнопрстуфхцчшщъыьэюя',
  'sloppy-windows-1250':
    '€\u0081‚\u0083„…†‡\u0088‰Š‹ŚŤŽŹ\u0090‘’“”•–—\u0098™š›śťžź\u00a0ˇ˘Ł¤Ą¦§¨©Ş«¬\u00ad®Ż°±˛ł´µ¶·¸ąş»Ľ˝ľż' +
    'ŔÁÂĂÄĹĆÇČÉĘËĚÍÎĎĐŃŇÓÔŐÖ×ŘŮÚŰÜÝŢßŕáâăäĺćçčéęëěíîďđńňóôőö÷řůúűüýţ˙',
  'sloppy-windows-1253':
    '€\u0081‚ƒ„…†‡\u0088‰\u008a‹\u008c\u008d\u008e\u008f\u0090‘’“”•–—\u0098™\u009a›\u009c\u009d\u009e\u009f\u00a0΅Ά£¤¥¦§¨©ª«¬\u00ad®―°±²³΄µ¶·ΈΉΊ»Ό½ΎΏ' +
    'ΐΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡÒΣΤΥΦΧΨΩΪΫάέήίΰαβγδεζηθικλμνξοπρςστυφχψωϊϋόύώÿ',
  'sloppy-windows-1254':
    '€\u0081‚ƒ„…†‡ˆ‰Š‹Œ\u008d\u008e\u008f\u0090‘’“”•–—˜™š›œ\u009d\u009eŸ\u00a0¡¢£¤¥¦§¨©ª«¬\u00ad®¯°±²³´µ¶·¸¹º»¼½¾¿' +
    'ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏĞÑÒÓÔÕÖ×ØÙÚÛÜİŞßàáâãäåæçèéêëìíîïğñòóôõö÷øùúûüışÿ',
  'sloppy-windows-1257':
    '€\u0081‚\u0083„…†‡\u0088‰\u008a‹\u008c¨ˇ¸\u0090‘’“”•–—\u0098™\u009a›\u009c¯˛\u009f\u00a0¡¢£¤¥¦§Ø©Ŗ«¬\u00ad®Æ°±²³´µ¶·ø¹ŗ»¼½¾æ' +
    'ĄĮĀĆÄÅĘĒČÉŹĖĢĶĪĻŠŃŅÓŌÕÖ×ŲŁŚŪÜŻŽßąįāćäåęēčéźėģķīļšńņóōõö÷ųłśūüżž˙',
  'iso-8859-2':
    '\u0080\u0081\u0082\u0083\u0084\u0085\u0086\u0087\u0088\u0089\u008a\u008b\u008c\u008d\u008e\u008f\u0090\u0091\u0092\u0093\u0094\u0095\u0096\u0097\u0098\u0099\u009a\u009b\u009c\u009d\u009e\u009f\u00a0Ą˘Ł¤ĽŚ§¨ŠŞŤŹ\u00adŽŻ°ą˛ł´ľśˇ¸šşťź˝žż' +
    'ŔÁÂĂÄĹĆÇČÉĘËĚÍÎĎĐŃŇÓÔŐÖ×ŘŮÚŰÜÝŢßŕáâăäĺćçčéęëěíîďđńňóôőö÷řůúűüýţ˙',
  'macroman':
    'ÄÅÇÉÑÖÜáàâäãåçéèêëíìîïñóòôöõúùûü†°¢£§•¶ß®©™´¨≠ÆØ∞±≤≥¥µ∂∑∏π∫ªºΩæø' +
    '¿¡¬√ƒ≈∆«»…\u00a0ÀÃÕŒœ–—“”‘’÷◊ÿŸ⁄€‹›ﬁﬂ‡·‚„‰ÂÊÁËÈÍÎÏÌÓÔ\uf8ffÒÚÛÙıˆ˜¯˘˙˚¸˝˛ˇ',
  'cp437':
    'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐' +
    '└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0',
};

const WIN1252_C1 = CODE_PAGES['sloppy-windows-1252'].slice(0, 32);

interface CodePage {
  name: string;
  sloppy: boolean;
  /** character → byte, for the characters outside ASCII. */
  encode: Map<string, number>;
}

const CHARMAP_ENCODINGS: CodePage[] = (() => {
  const out: CodePage[] = [];
  const latin1 = new Map<string, number>();
  for (let b = 0x80; b < 0x100; b++) latin1.set(String.fromCharCode(b), b);
  out.push({ name: 'latin-1', sloppy: false, encode: latin1 });
  for (const [name, table] of Object.entries(CODE_PAGES)) {
    const encode = new Map<string, number>();
    for (let i = 0; i < 128; i++) encode.set(table[i], 0x80 + i);
    out.push({ name, sloppy: name.startsWith('sloppy'), encode });
  }
  return out;
})();

/** The bytes of `text` in code page `cp`, or null where a character has no byte there. */
function encodeIn(text: string, cp: CodePage): Uint8Array | null {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80 && !(cp.sloppy && c === 0x1a)) {
      out[i] = c;
      continue;
    }
    const ch = text[i];
    const b = cp.sloppy && ch === '\ufffd' ? 0x1a : cp.encode.get(ch);
    if (b === undefined) return null;
    out[i] = b;
  }
  return out;
}

const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8Strict(bytes: Uint8Array): string | null {
  try {
    return UTF8_STRICT.decode(bytes);
  } catch {
    return null;
  }
}

/**
 * ftfy's replace_lossy_sequences: in a sloppy code page U+FFFD became byte 0x1A; a UTF-8 sequence
 * with such a byte in it decodes to one U+FFFD, and a lone 0x1A turns back into U+FFFD.
 */
function replaceLossy(bytes: Uint8Array): Uint8Array {
  if (!bytes.includes(0x1a)) return bytes;
  const s = String.fromCharCode(...bytes);
  const fixed = s.replace(LOSSY_UTF8_RE, '\xef\xbf\xbd');
  const out = new Uint8Array(fixed.length);
  for (let i = 0; i < fixed.length; i++) out[i] = fixed.charCodeAt(i);
  return out;
}
const LOSSY_UTF8_RE = new RegExp(
  [
    '[\\xc2-\\xdf]\\x1a',
    '\\xed[\\xa0-\\xaf]\\x1a\\xed[\\xb0-\\xbf][\\x1a\\x80-\\xbf]',
    '\\xed[\\xa0-\\xaf][\\x1a\\x80-\\xbf]\\xed[\\xb0-\\xbf]\\x1a',
    '[\\xe0-\\xef]\\x1a[\\x1a\\x80-\\xbf]',
    '[\\xe0-\\xef][\\x1a\\x80-\\xbf]\\x1a',
    '[\\xf0-\\xf4]\\x1a[\\x1a\\x80-\\xbf][\\x1a\\x80-\\xbf]',
    '[\\xf0-\\xf4][\\x1a\\x80-\\xbf]\\x1a[\\x1a\\x80-\\xbf]',
    '[\\xf0-\\xf4][\\x1a\\x80-\\xbf][\\x1a\\x80-\\xbf]\\x1a',
    '\\x1a',
  ].join('|'),
  'g',
);

/**
 * Evidence of mojibake strong enough that ftfy's own heuristic agrees: any C1 control, or a
 * Windows-1252 reading of a UTF-8 lead byte followed by a continuation byte, restricted to the pairs
 * that ftfy 6 judges bad in every context (found by running its `is_bad` over all of them).
 * "Ã©" (é), "â€" (General Punctuation: “ ” – —), "ðŸ" (emoji), "Ð°" (Cyrillic) all qualify.
 */
const MOJIBAKE_PAIR = new RegExp(
  [
    '[\\x80-\\x9f]',
    '[ÂÃÎÐ][€‚ƒ„†‡ˆ‰Š‹‘“”•–—˜™š›œžŸ\\xa0-¤¦-¿]',
    '[ÄÅÆÇÈÉÊËÌÍÏÑØÜÝ][ƒ†‡ˆ‰˜¤¦§¨ª¬¯°±²³µ¶¸¹º¼½¾]',
    '[ßáâãäåæçèéêëìîïñ][€ƒ†‡ˆ‰ŠŒŽ˜Ÿ¢£¤¥¦¨ª¬¯¸º]',
    'ð[˜Ÿ¢£¤¥¦¨ª¬¯¸º]',
  ].join('|'),
);

/**
 * ftfy's UTF8_DETECTOR_RE, rebuilt from the same definition: a character that some code page
 * (Latin-1 and the Windows/ISO pages, not MacRoman or CP437) decodes a UTF-8 lead byte to, followed
 * by the right number of continuation-byte characters; runs of these are taken together. A space
 * may stand for a continuation (it may have been U+00A0). The run must not follow a continuation
 * character (other than common punctuation), so that a few characters inside a large garble are
 * not "fixed" on their own.
 */
const UTF8_DETECTOR_RE = (() => {
  const pages = CHARMAP_ENCODINGS.filter((cp) => cp.name !== 'macroman' && cp.name !== 'cp437');
  const chars = (lo: number, hi: number): string => {
    const set = new Set<string>();
    for (const cp of pages) for (const [ch, b] of cp.encode) if (b >= lo && b <= hi && ch !== '\ufffd') set.add(ch);
    return [...set].map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('');
  };
  // ftfy's table takes 4-byte leads from bytes F0 and F3 only.
  const first4 = chars(0xf0, 0xf0) + chars(0xf3, 0xf3);
  const cont = chars(0x80, 0xbf);
  const punct = '\\u2013\\u2014\\u2015\\u2018\\u2019\\u201a\\u201c\\u201d\\u201e\\u2022\\u2026';
  const loose = `[ ${cont}]`;
  return new RegExp(
    `(?<![${cont}](?<![${punct}]))(?:[${chars(0xc2, 0xdf)}]${loose}|[${chars(0xe0, 0xef)}]${loose}{2}|[${first4}]${loose}{3})+`,
    'g',
  );
})();

/** ftfy's decode_inconsistent_utf8: each detected run that looks bad is fixed on its own. */
function decodeInconsistentUtf8(text: string): string {
  return text.replace(UTF8_DETECTOR_RE, (run) => (run.length < text.length && MOJIBAKE_PAIR.test(run) ? fixEncoding(run) : run));
}

const C1_RE = /[\x80-\x9f]/g;

/** ftfy's fix_c1_controls: a C1 control is read as the Windows-1252 character for that byte. */
function fixC1Controls(text: string): string {
  return text.replace(C1_RE, (c) => WIN1252_C1[c.charCodeAt(0) - 0x80]);
}

/** One step of ftfy's fix_encoding (see the file comment for what is left out). */
function fixEncodingOnce(text: string): string {
  // eslint-disable-next-line no-control-regex
  if (text.length === 0 || /^[\x00-\x7f]*$/.test(text) || !MOJIBAKE_PAIR.test(text)) return text;
  let latin1Possible = false;
  for (const cp of CHARMAP_ENCODINGS) {
    let bytes = encodeIn(text, cp);
    if (bytes === null) continue;
    if (cp.name === 'latin-1') latin1Possible = true;
    if (cp.sloppy) bytes = replaceLossy(bytes);
    const fixed = decodeUtf8Strict(bytes);
    if (fixed !== null) return fixed;
  }
  // Mojibake inside otherwise sound text ("café and cafÃ©"): fix each UTF-8-looking run alone.
  const inconsistent = decodeInconsistentUtf8(text);
  if (inconsistent !== text) return inconsistent;
  // Latin-1 text that holds C1 controls was probably Windows-1252 all along. (ftfy checks for a
  // 'windows-1252' entry that its list never has, so this branch runs whenever Latin-1 fits.)
  if (latin1Possible) {
    let strict = true;
    const fixed = text.replace(C1_RE, (c) => {
      const b = c.charCodeAt(0);
      if (b === 0x81 || b === 0x8d || b === 0x8f || b === 0x90 || b === 0x9d) strict = false;
      return WIN1252_C1[b - 0x80];
    });
    if (strict && fixed !== text) return fixed;
  }
  return C1_RE.test(text) ? fixC1Controls(text) : text;
}

function fixEncoding(text: string): string {
  for (;;) {
    const next = fixEncodingOnce(text);
    if (next === text) return text;
    text = next;
  }
}

// ---------------------------------------------------------------------------------------------
// Character-level fixes

/** Latin ligatures and legacy digraphs that ftfy splits (it keeps æ and œ, which are letters). */
const LIGATURES: Record<string, string> = {
  'Ĳ': 'IJ', 'ĳ': 'ij', 'ŉ': 'ʼn', 'Ǳ': 'DZ', 'ǲ': 'Dz', 'ǳ': 'dz', 'Ǆ': 'DŽ', 'ǅ': 'Dž', 'ǆ': 'dž',
  'Ǉ': 'LJ', 'ǈ': 'Lj', 'ǉ': 'lj', 'Ǌ': 'NJ', 'ǋ': 'Nj', 'ǌ': 'nj',
  'ﬀ': 'ff', 'ﬁ': 'fi', 'ﬂ': 'fl', 'ﬃ': 'ffi', 'ﬄ': 'ffl', 'ﬅ': 'ſt', 'ﬆ': 'st',
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join('')}]`, 'g');

/** Fullwidth and halfwidth forms (U+FF01–U+FFEF) become their NFKC form; U+3000 becomes a space. */
function fixCharacterWidth(text: string): string {
  return text.replace(/[\u3000\uff01-\uffef]/g, (c) => (c === '\u3000' ? ' ' : c.normalize('NFKC')));
}

const LONE_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const ANSI_RE = /\x1b\[[\p{Nd};]*[a-zA-Z]/gu;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g;

/** One pass of ftfy's fixers over a line (fix_and_explain's loop body). */
function fixOnce(text: string, unescape: boolean): string {
  if (unescape) text = unescapeHtml(text);
  text = fixEncoding(text);
  text = fixC1Controls(text);
  text = text.replace(LIGATURE_RE, (c) => LIGATURES[c]);
  text = fixCharacterWidth(text);
  text = text.replace(/[\u02bc\u2018-\u201b]/g, "'").replace(/[\u201c-\u201f]/g, '"');
  text = text.replace(/\r\n?|[\u2028\u2029\x85]/g, '\n');
  text = text.replace(LONE_SURROGATE_RE, '\ufffd');
  text = text.replace(ANSI_RE, '');
  text = text.replace(CONTROL_RE, '');
  return text.normalize('NFC');
}

/**
 * ftfy 6.1 `fix_text(text)` with its default settings (see the file comment for the differences).
 * Never throws: any string, lone surrogates included, comes back as well-formed text.
 */
export function fixText(text: string): string {
  // ftfy works line by line (and at most 1,000,000 characters at a time). In "auto" mode a line
  // holding '<' is taken to be HTML, so its entities are kept — and, as in ftfy, once that happens
  // no later line is unescaped either.
  let unescape = true;
  let out = '';
  let pos = 0;
  while (pos < text.length) {
    const nl = text.indexOf('\n', pos);
    let end = nl === -1 ? text.length : nl + 1;
    if (end - pos > 1_000_000) {
      end = pos + 1_000_000;
      if (/[\ud800-\udbff]/.test(text[end - 1])) end--;
    }
    const segment = text.slice(pos, end);
    if (unescape && segment.includes('<')) unescape = false;
    out += fixSegment(segment, unescape);
    pos = end;
  }
  return out;
}

function fixSegment(text: string, unescape: boolean): string {
  for (let i = 0; i < 16; i++) {
    const next = fixOnce(text, unescape);
    if (next === text) return next;
    text = next;
  }
  // ftfy loops until nothing changes; every fix shortens or canonicalises the text, so this bound
  // (never reached on real input) only guards against a cycle.
  return text;
}
