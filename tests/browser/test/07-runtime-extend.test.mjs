// (7) Never cut off by surprise: before a runtime's prepaid time runs out every participant's
// studio warns; the payer extends it from the runtime panel and the warning goes; another
// editor is told that only the payer can.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Server, PASSWORD, withModels } from '../lib/server.mjs'
import { launch, openPage, loginViaUi, openStudio, artifact } from '../lib/browser.mjs'

let server, browser, ada, bob, session
before(async () => {
  const opts = withModels({ worker: true })
  // Warned 58 s before the end: a one-minute runtime is warned at once.
  opts.args.push('--low-balance-warning-s', '58')
  server = await new Server(opts).start()
  browser = await launch()
  ada = await server.signup('Ada')
  bob = await server.signup('Bob')
  session = (await server.call('POST', '/sessions', { token: ada.token, body: { title: 'Extend' } })).body.id
  await server.addMember(ada.token, session, bob, 'editor')
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

test('the runtime warns before its prepaid time runs out, and the payer extends it', async () => {
  const a = await openPage(browser, server.base, { name: 'ada' })
  const b = await openPage(browser, server.base, { name: 'bob' })
  try {
    await loginViaUi(a.page, { email: ada.email, password: PASSWORD })
    await loginViaUi(b.page, { email: bob.email, password: PASSWORD })
    await openStudio(a.page, session)
    await openStudio(b.page, session)
    const panel = (p) => p.locator('section[aria-labelledby="runtime-h"]')
    await panel(a.page).getByLabel('Prepaid minutes').fill('1')
    assert.match(await panel(a.page).getByTestId('runtime-cost').textContent(), /Holds 0\.1 credits/)
    await panel(a.page).getByRole('button', { name: 'Start runtime' }).click()
    for (const p of [a.page, b.page]) {
      await panel(p).getByTestId('low-balance').waitFor({ timeout: 15000 })
      await p.getByRole('alert').filter({ hasText: 'prepaid time is almost used up' }).first().waitFor()
    }
    await a.page.screenshot({ path: artifact('runtime-low-balance.png') })

    // Bob is an editor but does not pay: he is told so.
    await panel(b.page).getByRole('button', { name: 'Extend' }).click()
    await panel(b.page).getByRole('alert').filter({ hasText: 'Only the person paying for this runtime can extend it.' }).waitFor()

    await panel(a.page).getByLabel('Add minutes').fill('10')
    await panel(a.page).getByRole('button', { name: 'Extend' }).click()
    await panel(a.page).getByRole('status').filter({ hasText: 'Added 10 min; the running job goes on.' }).waitFor()
    // The warning goes everywhere (runtime.extended), and the runtime runs on.
    for (const p of [a.page, b.page]) {
      await panel(p).getByTestId('low-balance').waitFor({ state: 'detached', timeout: 5000 })
      assert.equal(await p.locator('.banners').getByText('prepaid time is almost used up').count(), 0)
    }
    assert.match(await panel(a.page).textContent(), /Prepaid11 min 0 s/)
    assert.equal(await panel(a.page).locator('[data-runtime-state="running"]').count(), 1)
    assert.deepEqual([...a.problems, ...b.problems], [])
  } finally {
    await a.context.close()
    await b.context.close()
  }
})
