// (6) The operator's side and buying credits in the page: the admin section is hidden from
// other accounts; an admin grants credits with a reason and the user sees the line in their
// history; buying a pack goes through Checkout (a Stripe stand-in here, which answers the
// Checkout Session call and then sends the signed webhook) and the dashboard shows the new
// balance when the user comes back.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { createHmac } from 'node:crypto'
import { Server, PASSWORD } from '../lib/server.mjs'
import { launch, openPage, loginViaUi, artifact } from '../lib/browser.mjs'

const SECRET = 'whsec_browser'
let server, browser, standIn, user, admin

/** Answers POST /v1/checkout/sessions like Stripe, then "the user pays": the signed webhook. */
function startStandIn () {
  const s = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => { body += c })
    req.on('end', () => {
      const form = new URLSearchParams(body)
      const id = `cs_test_${Date.now()}`
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ id, url: form.get('success_url') }))
      const event = JSON.stringify({
        id: `evt_${id}`,
        type: 'checkout.session.completed',
        data: { object: { id, payment_status: 'paid', payment_intent: `pi_${id}`, client_reference_id: form.get('client_reference_id'), metadata: { credits: form.get('metadata[credits]') } } }
      })
      // Stripe's webhook arrives a moment after the user is sent back.
      setTimeout(async () => {
        const t = Math.floor(Date.now() / 1000)
        const sig = createHmac('sha256', SECRET).update(`${t}.${event}`).digest('hex')
        await fetch(`${server.base}/api/v1/billing/webhook`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': `t=${t},v1=${sig}` }, body: event })
      }, 1500)
    })
  })
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)))
}

before(async () => {
  standIn = await startStandIn()
  const stripe = `http://127.0.0.1:${standIn.address().port}`
  server = await new Server({
    args: ['--payment-webhook-secret', SECRET, '--stripe-secret-key', 'sk_test_browser', '--stripe-api-base', stripe, '--credit-packs', 'starter=10000:500:usd']
  }).start()
  browser = await launch()
  user = await server.signup('Ada')
  admin = await server.signup('Root')
  server.adminCli(['set-role', '--email', admin.email, '--role', 'admin'])
})
after(async () => {
  await browser?.close()
  await server?.stop()
  standIn?.close()
})

test('an admin grants credits with a reason; the user sees it; the admin page is hidden from users', async () => {
  const u = await openPage(browser, server.base, { name: 'user' })
  const a = await openPage(browser, server.base, { name: 'admin' })
  try {
    await loginViaUi(u.page, { email: user.email, password: PASSWORD })
    assert.equal(await u.page.getByRole('link', { name: 'Admin' }).count(), 0, 'no admin link for a user')
    await u.page.goto('/#/admin')
    await u.page.getByRole('heading', { name: 'Not available' }).waitFor()

    await loginViaUi(a.page, { email: admin.email, password: PASSWORD })
    await a.page.getByRole('link', { name: 'Admin' }).click()
    await a.page.getByLabel('Search by email').fill(user.email.slice(0, 12))
    await a.page.getByRole('button', { name: `Manage ${user.email}` }).click()
    const detail = a.page.getByTestId('admin-account')
    await detail.getByLabel('Credits').fill('2.5')
    await detail.getByLabel('Reason').fill('welcome to the beta')
    await detail.getByRole('button', { name: 'Grant or deduct' }).click()
    await detail.getByRole('status').filter({ hasText: '+2.5 credits granted.' }).waitFor()
    await a.page.locator('tr[data-account-email] td').filter({ hasText: /^8\.5$/ }).waitFor()
    await a.page.getByRole('button', { name: 'Refresh' }).last().click()
    await a.page.getByRole('table', { name: 'Audit log' }).getByText('welcome to the beta').waitFor()
    await a.page.screenshot({ path: artifact('admin.png'), fullPage: true })

    await u.page.goto('/#/sessions')
    await u.page.reload()
    await u.page.getByTestId('balance').filter({ hasText: '8.5 credits available' }).waitFor()
    const history = u.page.getByRole('table', { name: 'Credits history' })
    const line = history.locator('tr[data-kind="grant"]').filter({ hasText: 'welcome to the beta' })
    await line.waitFor()
    assert.match(await line.textContent(), /\+2\.5/)
    assert.deepEqual([...u.problems, ...a.problems], [])
  } finally {
    await u.context.close()
    await a.context.close()
  }
})

test('buying a pack: Checkout, back to the dashboard, the balance goes up', async () => {
  const u = await openPage(browser, server.base, { name: 'buyer' })
  try {
    await loginViaUi(u.page, { email: user.email, password: PASSWORD })
    const before = await u.page.getByTestId('balance').textContent()
    await u.page.getByRole('button', { name: 'Buy 10 credits for $5.00' }).click()
    // The stand-in's checkout page is the success URL: straight back to the dashboard.
    await u.page.waitForURL(/checkout=success/)
    await u.page.getByTestId('checkout-status').filter({ hasText: 'Payment received: +10 credits.' }).waitFor({ timeout: 15000 })
    const after = await u.page.getByTestId('balance').textContent()
    assert.notEqual(after, before)
    assert.match(after, /18\.5 credits available/)
    await u.page.getByRole('table', { name: 'Credits history' }).locator('tr[data-kind="purchase"]').waitFor()
    await u.page.screenshot({ path: artifact('dashboard-credits.png'), fullPage: true })
  } finally {
    await u.context.close()
  }
})
