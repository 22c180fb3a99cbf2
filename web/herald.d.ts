// herald.d.ts
