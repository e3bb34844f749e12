// The CRM workload with node-postgres (pg): $n parameters in text format
// (extended protocol, unnamed statements), named prepared statements for
// the lookups, a multi-row INSERT for the batch, a JS array for
// `= ANY($1)`, and SAVEPOINT / ROLLBACK TO SAVEPOINT by hand.
'use strict';

const { Client } = require('pg');
const workload = require('./workload');

const COLUMNS = 'full_name, email, phone, national_id, address, segment';
const values = (c) => [c.full_name, c.email, c.phone, c.national_id, c.address, c.segment];
const placeholders = (row, width) => `(${Array.from({ length: width }, (_, i) => `$${row * width + i + 1}`).join(', ')})`;
const INSERT = `INSERT INTO customers (${COLUMNS}) VALUES ${placeholders(0, 6)}`;

class NodePg {
  constructor() {
    this.clients = {};
  }

  async db(user = 'crm_user') {
    if (!this.clients[user]) {
      const client = new Client(workload.connection(user));
      await client.connect();
      this.clients[user] = client;
    }
    return this.clients[user];
  }

  async query(text, params, user) {
    return (await this.db(user)).query({ text, values: params, rowMode: 'array' });
  }

  async rows(text, params, user) {
    return (await this.query(text, params, user)).rows;
  }

  async insertOne(c) {
    return (await this.rows(`${INSERT} RETURNING id, email`, values(c)))[0];
  }

  async insertBatch(cs) {
    const rows = cs.map((_, i) => placeholders(i, 6)).join(', ');
    const sql = `INSERT INTO customers (${COLUMNS}) VALUES ${rows} RETURNING id`;
    return (await this.rows(sql, cs.flatMap(values))).map((r) => r[0]);
  }

  async insertSave(c) {
    return (await this.rows(`${INSERT} RETURNING id`, values(c)))[0][0];
  }

  async find(column, value) {
    const db = await this.db();
    const text = `SELECT id, full_name FROM customers WHERE ${column} = $1 ORDER BY id`;
    return (await db.query({ name: `find_by_${column}`, text, values: [value], rowMode: 'array' })).rows;
  }

  findByEmail(email) {
    return this.find('email', email);
  }

  findByPhone(phone) {
    return this.find('phone', phone);
  }

  async findIn(emails) {
    return (await this.rows('SELECT id FROM customers WHERE email IN ($1, $2)', emails)).map((r) => r[0]);
  }

  async findAny(emails) {
    return (await this.rows('SELECT id FROM customers WHERE email = ANY($1)', [emails])).map((r) => r[0]);
  }

  async updatePhone(id, phone) {
    return (await this.query('UPDATE customers SET phone = $1 WHERE id = $2', [phone, id])).rowCount;
  }

  async updateAddressAsSupport(id, address) {
    return (await this.query('UPDATE customers SET address = $1 WHERE id = $2', [address, id], 'support_user')).rowCount;
  }

  async nextId() {
    return (await this.rows("SELECT nextval('customers_id_seq')"))[0][0];
  }

  async upsert(id, c) {
    const sql =
      `INSERT INTO customers (id, ${COLUMNS}) VALUES ${placeholders(0, 7)} ON CONFLICT (id) DO UPDATE SET ` +
      workload.FIELDS.map((f) => `${f} = EXCLUDED.${f}`).join(', ');
    await this.query(sql, [id, ...values(c)]);
  }

  async deleteByEmail(email) {
    return (await this.query('DELETE FROM customers WHERE email = $1', [email])).rowCount;
  }

  async page(segment, limit, offset) {
    const sql = 'SELECT id, email FROM customers WHERE segment = $1 ORDER BY id LIMIT $2 OFFSET $3';
    return this.rows(sql, [segment, limit, offset]);
  }

  async savepointInsert(c, x) {
    const db = await this.db();
    await db.query('BEGIN');
    try {
      const id = await this.insertSave(c);
      await db.query('SAVEPOINT before_refused');
      try {
        await this.insertLower(x);
      } catch (e) {
        await db.query('ROLLBACK TO SAVEPOINT before_refused');
      }
      await db.query('COMMIT');
      return id;
    } catch (e) {
      await db.query('ROLLBACK');
      throw e;
    }
  }

  async readAs(user, id, purpose) {
    const db = await this.db(user);
    if (purpose) await db.query(`SET pgveil.purpose = '${purpose}'`);
    const text = 'SELECT full_name, email, phone, national_id, address FROM customers WHERE id = $1';
    const row = (await db.query(text, [id])).rows[0];
    if (purpose) await db.query('RESET pgveil.purpose');
    return row;
  }

  findByName(name) {
    return this.find('full_name', name);
  }

  orderByEmail(segment) {
    return this.rows('SELECT id FROM customers WHERE segment = $1 ORDER BY email', [segment]);
  }

  insertLower(x) {
    return this.query('INSERT INTO customers (email, segment) VALUES (lower($1), $2)', [x.email, x.segment]);
  }

  insertAs(user, x) {
    return this.query(INSERT, values(x), user);
  }

  async countSegment(segment) {
    return (await this.rows('SELECT count(*) FROM customers WHERE segment = $1', [segment]))[0][0];
  }

  async close() {
    await Promise.all(Object.values(this.clients).map((c) => c.end()));
  }
}

workload.run('node-pg', new NodePg()).then((code) => process.exit(code), (e) => {
  console.error(e);
  process.exit(1);
});
