-- A project is deleted by its delete chain in one transaction; it is never kept in a
-- `pending_deletion` state, so `active` is the only status a project row can have.
ALTER TABLE project DROP CONSTRAINT project_status_check;
ALTER TABLE project ADD CONSTRAINT project_status_check CHECK (status = 'active');
