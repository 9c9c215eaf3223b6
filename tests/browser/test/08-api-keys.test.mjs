// (8) API keys in the studio (made through the typed client, @atelier/client): make a key, its
// secret shown once works against the API, its use is listed, revoking it ends it.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { Server, PASSWORD } from '../lib/server.mjs'
import { launch, openPage, signupViaUi, artifact } from '../lib/browser.mjs'

let server, browser
before(async () => {
  server = await new Server().start()
  browser = await launch()
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

test('make an API key in the account page, use it, see its use, revoke it', async () => {
  const { context, page, problems } = await openPage(browser, server.base, { name: 'keys' })
  try {
    await page.goto('/')
    await page.getByRole('heading', { name: 'Log in' }).waitFor()
    await signupViaUi(page, { name: 'Kay', email: `kay-${randomUUID()}@example.com`, password: PASSWORD })
    await page.getByText('API keys', { exact: true }).click()
    await page.getByLabel('Name', { exact: true }).fill('overnight batch')
    await page.getByRole('checkbox', { name: /jobs:run/ }).check()
    await page.getByRole('button', { name: 'Make key' }).click()
    const secret = (await page.getByTestId('api-key-secret').textContent()).trim()
    assert.match(secret, /^atk_[0-9a-f]{64}$/)

    // The key works (within its scopes) and is listed with its use.
    for (let i = 0; i < 3; i++) assert.equal((await server.call('GET', '/sessions', { token: secret })).status, 200)
    assert.equal((await server.call('GET', '/billing/balance', { token: secret })).status, 403)
    await page.reload()
    await page.getByText('API keys', { exact: true }).click()
    const row = page.getByRole('row').filter({ hasText: 'overnight batch' })
    await row.filter({ hasText: secret.slice(0, 12) }).waitFor()
    assert.match(await row.textContent(), /sessions:read, jobs:run/)
    // Requests in the last 24 hours: three reads and the refused balance.
    assert.equal((await row.locator('td').nth(4).textContent()).trim(), '4')
    await page.screenshot({ path: artifact('api-keys.png'), fullPage: true })

    await row.getByRole('button', { name: 'Revoke' }).click()
    await row.filter({ hasText: 'revoked' }).waitFor()
    assert.equal((await server.call('GET', '/sessions', { token: secret })).status, 401)
    assert.deepEqual(problems, [])
  } finally {
    await context.close()
  }
})
