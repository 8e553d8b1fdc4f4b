// Renders an AsyncAPI document as one self-contained, browsable HTML page, the way AsyncAPI's own
// html-template does (parse with @asyncapi/parser, server-side render @asyncapi/react-component, hydrate in
// the browser with its standalone bundle) without the template's generator and headless-Chrome PDF machinery.
//
//   node render.mjs <asyncapi.json> <out.html>
//
// Exits 1, printing the parser's diagnostics, when the document is not valid AsyncAPI.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { createRequire } from 'node:module';
import { Parser, stringify, DiagnosticSeverity } from '@asyncapi/parser';
import React from 'react';
import { renderToString } from 'react-dom/server';

const require = createRequire(import.meta.url);
const AsyncApi = require('@asyncapi/react-component/lib/cjs/without-parser.js').default;

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: node render.mjs <asyncapi.json> <out.html>');
  process.exit(2);
}

const { document, diagnostics } = await new Parser().parse(readFileSync(input, 'utf8'));
const problems = diagnostics.filter((d) => d.severity <= DiagnosticSeverity.Warning);
for (const d of problems) {
  const where = d.path.length ? d.path.join('/') : '(document)';
  console.error(`${DiagnosticSeverity[d.severity].toLowerCase()}: ${where}: ${d.message} [${d.code}]`);
}
if (!document || problems.some((d) => d.severity === DiagnosticSeverity.Error)) {
  console.error(`${input} is not a valid AsyncAPI document`);
  process.exit(1);
}

const config = { show: { sidebar: true, errors: true }, sidebar: { showOperations: 'byDefault' } };
const markup = renderToString(React.createElement(AsyncApi, { schema: document, config }));
const asset = (path) => readFileSync(require.resolve(`@asyncapi/react-component/${path}`), 'utf8');
// `<` inside an inline script would end it early (`</script>` in a description): escape it in the JSON.
const json = (value) => JSON.stringify(value).replace(/</g, '\\u003c');
const title = document.info().title();

const page = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title.replace(/[<&]/g, (c) => (c === '<' ? '&lt;' : '&amp;'))} ${document.info().version()}</title>
<style>${asset('styles/default.min.css')}</style>
</head>
<body>
<div id="asyncapi">${markup}</div>
<script>${asset('browser/standalone/without-parser.js')}</script>
<script>
AsyncApiStandalone.hydrate({ schema: ${json(stringify(document))}, config: ${json(config)} },
  document.getElementById('asyncapi'));
</script>
</body>
</html>
`;
mkdirSync(dirname(output), { recursive: true });
writeFileSync(output, page);
