'use strict'
// Private broker servers for the backend tests, started as the Rust and Python suites start
// them: a free loopback port, a directory of their own, stopped when the test file ends.
// Without the binary, REDIS_URL / NATS_URL name a shared server; without either the test is
// skipped, except under CI=true where it fails.
const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

function which(name) {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || null
  } catch {
    return null
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

async function waitForPort(port, child, what, withinMs = 15000) {
  const deadline = Date.now() + withinMs
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited at start with status ${child.exitCode}`)
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1')
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`${what} did not accept connections within ${withinMs} ms`)
}

/** `{ url, stop }` of a server, or `{ skip: reason }`. */
async function start(what, binary, envUrl, args) {
  if (binary === null) {
    const url = process.env[envUrl]
    if (url) return { url, stop: async () => {} }
    const reason = `no ${what} on PATH and ${envUrl} is not set`
    if (process.env.CI === 'true') throw new Error(`${reason} (CI=true: a missing server is a failure)`)
    return { skip: reason }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `netbus-${what}-`))
  const port = await freePort()
  const child = spawn(binary, args(port, dir), { stdio: 'ignore' })
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000)
      await exited
      clearTimeout(timer)
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }
  try {
    await waitForPort(port, child, what)
  } catch (e) {
    await stop()
    throw e
  }
  return { port, stop, scheme: what }
}

async function redisServer() {
  const s = await start('redis-server', which('redis-server'), 'REDIS_URL', (port, dir) => [
    '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no',
  ])
  if (s.port !== undefined) s.url = `redis://127.0.0.1:${s.port}`
  return s
}

async function natsServer() {
  const s = await start('nats-server', process.env.NATS_SERVER_BIN || which('nats-server'), 'NATS_URL', (port, dir) => [
    '-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir,
  ])
  if (s.port !== undefined) s.url = `nats://127.0.0.1:${s.port}`
  return s
}

module.exports = { redisServer, natsServer }
