-- Sample customers for `pgveil demo`. The demo writes them through pgveil
-- as crm_user, so the protected columns reach PostgreSQL encrypted.
INSERT INTO customers (full_name, email, phone, national_id, address, segment) VALUES
    ('张伟', 'zhang.wei@example.com', '+86 138 0013 8000', '110101199003071234', '北京市朝阳区建国路 88 号', 'vip'),
    ('王芳', 'wang.fang@example.com', '+86 139 1234 5678', '310104198512125678', '上海市徐汇区漕溪北路 1 号', 'standard'),
    ('陳大文', 'chan.taiman@example.hk', '+852 9123 4567', 'A1234563', '香港中環皇后大道中 1 號', 'vip'),
    ('Alice Smith', 'alice.smith@example.com', '+44 20 7946 0958', 'QQ123456C', '10 Downing Street, London', 'standard'),
    ('李娜', 'li.na@example.com', '+86 137 0000 1111', '440104199208081111', '广州市天河区体育西路 2 号', 'standard');
