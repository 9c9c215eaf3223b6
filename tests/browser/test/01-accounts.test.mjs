// (1) Sign up and log in through the page, create a session, the dashboard lists it.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { Server, PASSWORD } from '../lib/server.mjs'
import { launch, openPage, signupViaUi, loginViaUi, artifact, PHONE } from '../lib/browser.mjs'

let server, browser
before(async () => {
  server = await new Server().start()
  browser = await launch()
})
after(async () => {
  await browser?.close()
  await server?.stop()
})

test('sign up, log out, log in, create a session: the dashboard shows it', async () => {
  const { context, page, problems } = await openPage(browser, server.base, { name: 'ada' })
  try {
    const email = `ada-${randomUUID()}@example.com`
    await page.goto('/')
    // Signed out: the page sends us to log in.
    await page.getByRole('heading', { name: 'Log in' }).waitFor()
    await page.screenshot({ path: artifact('login.png') })
    await signupViaUi(page, { name: 'Ada Lovelace', email, password: PASSWORD })
    assert.equal(await page.getByTestId('account-name').textContent(), 'Ada Lovelace')

    await page.getByRole('button', { name: 'Log out' }).click()
    await page.getByRole('heading', { name: 'Log in' }).waitFor()
    // A wrong password is reported on the page.
    await page.getByLabel('Email').fill(email)
    await page.getByLabel('Password').fill('not the password at all')
    await page.getByRole('button', { name: 'Log in' }).click()
    await page.getByRole('alert').filter({ hasText: /wrong email or password/i }).waitFor()

    await loginViaUi(page, { email, password: PASSWORD })
    await page.getByLabel('New session title').fill('Terrain study')
    await page.getByRole('button', { name: 'Create session' }).click()
    // Creating opens the studio; back on the dashboard it is listed.
    await page.waitForURL(/#\/s\/[0-9a-f-]{36}$/)
    const sessionId = page.url().split('/s/')[1]
    await page.goto('/#/sessions')
    const row = page.locator(`[data-session-id="${sessionId}"]`)
    await row.waitFor()
    assert.match(await row.textContent(), /Terrain study/)
    assert.match(await row.textContent(), /owner/)

    // Rename and delete from the dashboard.
    await page.getByRole('button', { name: 'Rename Terrain study' }).click()
    await page.getByLabel('New title for Terrain study').fill('Terrain study v2')
    await page.getByRole('button', { name: 'Save' }).click()
    await row.getByRole('link', { name: 'Terrain study v2', exact: true }).waitFor()

    // Starter credits are there; buying says plainly that payments are not set up here.
    await page.getByRole('heading', { name: 'Credits', exact: true }).waitFor()
    await page.getByTestId('balance').filter({ hasText: '6 credits available' }).waitFor()
    await page.getByRole('button', { name: 'Buy credits' }).click()
    await page.getByRole('status').filter({ hasText: 'the operator of this server has not set up payments' }).waitFor()
    await page.screenshot({ path: artifact('dashboard.png'), fullPage: true })

    // On a phone-sized screen, the dashboard is still usable.
    await page.setViewportSize(PHONE)
    await page.screenshot({ path: artifact('dashboard-phone.png'), fullPage: true })
    await page.setViewportSize({ width: 1366, height: 820 })

    await page.getByRole('button', { name: 'Delete Terrain study v2' }).click()
    await page.getByRole('button', { name: 'Confirm deleting Terrain study v2' }).click()
    await row.waitFor({ state: 'detached' })
    const list = await server.call('GET', '/sessions', { token: (await server.call('POST', '/auth/login', { body: { email, password: PASSWORD } })).body.token })
    assert.deepEqual(list.body, [])
    assert.deepEqual(problems, [])
  } finally {
    await context.close()
  }
})
