"""The Modality Worklist: C-FIND identifiers → queries (PS3.4 matching, :mod:`.query`), items
→ response identifiers (:mod:`.dataset`) and straight to bytes (:mod:`.encoder`), and the rules
for applying an order change (:mod:`.order_rules`). Pure; may import mapping.translit,
domain, errors.
"""
