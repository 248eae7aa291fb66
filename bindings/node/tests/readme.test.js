'use strict'
// The quick start the README shows runs as written.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const here = path.join(__dirname, '..')

test('the README quick start is examples/quickstart.js, and it runs', () => {
  const readme = fs.readFileSync(path.join(here, 'README.md'), 'utf8')
  const example = fs.readFileSync(path.join(here, 'examples', 'quickstart.js'), 'utf8')
  const body = example.slice(example.indexOf('const { EventBus }'), example.indexOf('main().catch')).trim()
  assert.ok(readme.includes(body), 'the README shows the example as it is')
  const out = execFileSync(process.execPath, [path.join(here, 'examples', 'quickstart.js')], { encoding: 'utf8', timeout: 30000 })
  assert.match(out, /\{ type: 'click', x: 1 \}/)
  assert.match(out, /\{ type: 'click', x: 2 \}/)
  assert.match(out, /ingested 4/)
})
