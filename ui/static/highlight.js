// Syntax highlighting for the file viewer: highlight.js (vendored, ES modules, see
// vendor/highlightjs/VERSION) with the languages a server's files are mostly written in.
// The language comes from the file name; otherwise highlight.js guesses among these.
import hljs from "./vendor/highlightjs/core.min.js";
import apache from "./vendor/highlightjs/languages/apache.min.js";
import bash from "./vendor/highlightjs/languages/bash.min.js";
import css from "./vendor/highlightjs/languages/css.min.js";
import diff from "./vendor/highlightjs/languages/diff.min.js";
import dockerfile from "./vendor/highlightjs/languages/dockerfile.min.js";
import go from "./vendor/highlightjs/languages/go.min.js";
import ini from "./vendor/highlightjs/languages/ini.min.js";
import javascript from "./vendor/highlightjs/languages/javascript.min.js";
import json from "./vendor/highlightjs/languages/json.min.js";
import markdown from "./vendor/highlightjs/languages/markdown.min.js";
import nginx from "./vendor/highlightjs/languages/nginx.min.js";
import perl from "./vendor/highlightjs/languages/perl.min.js";
import php from "./vendor/highlightjs/languages/php.min.js";
import plaintext from "./vendor/highlightjs/languages/plaintext.min.js";
import properties from "./vendor/highlightjs/languages/properties.min.js";
import python from "./vendor/highlightjs/languages/python.min.js";
import ruby from "./vendor/highlightjs/languages/ruby.min.js";
import shell from "./vendor/highlightjs/languages/shell.min.js";
import sql from "./vendor/highlightjs/languages/sql.min.js";
import typescript from "./vendor/highlightjs/languages/typescript.min.js";
import xml from "./vendor/highlightjs/languages/xml.min.js";
import yaml from "./vendor/highlightjs/languages/yaml.min.js";

const LANGUAGES = { apache, bash, css, diff, dockerfile, go, ini, javascript, json, markdown,
  nginx, perl, php, plaintext, properties, python, ruby, shell, sql, typescript, xml, yaml };
for (const [name, grammar] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, grammar);

const BY_EXTENSION = {
  conf: "ini", cfg: "ini", ini: "ini", toml: "ini", service: "ini", timer: "ini",
  properties: "properties", env: "bash", sh: "bash", bash: "bash", zsh: "bash",
  py: "python", js: "javascript", mjs: "javascript", cjs: "javascript", ts: "typescript",
  json: "json", yml: "yaml", yaml: "yaml", xml: "xml", html: "xml", htm: "xml", svg: "xml",
  css: "css", md: "markdown", sql: "sql", go: "go", rb: "ruby", pl: "perl", pm: "perl",
  php: "php", diff: "diff", patch: "diff", txt: "plaintext", log: "plaintext",
};
const BY_NAME = { dockerfile: "dockerfile", ".htaccess": "apache", "nginx.conf": "nginx",
  "apache2.conf": "apache", "httpd.conf": "apache", ".bashrc": "bash", ".profile": "bash",
  crontab: "bash" };
const GUESS_LIMIT = 64 * 1024; // larger files are not guessed at (slow), only named
const HIGHLIGHT_LIMIT = 1024 * 1024;

// The language for a file name, or null when the name does not say.
export function languageOf(path) {
  const name = (path.split("/").pop() ?? "").toLowerCase();
  if (BY_NAME[name]) return BY_NAME[name];
  if (path.includes("/nginx/") && name.endsWith(".conf")) return "nginx";
  const dot = name.lastIndexOf(".");
  return dot > 0 ? BY_EXTENSION[name.slice(dot + 1)] ?? null : null;
}

// Renders `text` highlighted into `code` (a <code> element) and returns the language used.
// highlight.js escapes the text itself; its markup is only <span class="hljs-…">.
export function highlightInto(code, text, path) {
  code.className = "hljs";
  if (text.length > HIGHLIGHT_LIMIT) {
    code.textContent = text;
    return "plaintext";
  }
  const language = languageOf(path);
  let out;
  if (language) out = hljs.highlight(text, { language, ignoreIllegals: true });
  else if (text.length <= GUESS_LIMIT) out = hljs.highlightAuto(text);
  else out = hljs.highlight(text, { language: "plaintext" });
  code.innerHTML = out.value;
  code.dataset.language = out.language ?? language ?? "plaintext";
  return code.dataset.language;
}
